"""The built-in benchmark's training recipe: the co-training terms that need the simulator's knowledge
(grounding questions, counterfactual pairs, role attention), plugged into export's SFT trainer."""
