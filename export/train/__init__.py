"""Training: the run skeleton (loop), demonstrations and batches (data), SFT (sft) and PPO recovery (rl).

``rlrc-train`` is ``export.train.sft``; ``rlrc-export recover-rl`` is ``export.train.rl``.
"""
