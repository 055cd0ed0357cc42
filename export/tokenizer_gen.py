"""A generated Llama-layout tokenizer for tiny checkpoints (no pretrained files exist here).

The id layout is the part that matters and it is Llama-2's: 0 ``<unk>``, 1 ``<s>``, 2 ``</s>``,
3..258 byte-fallback pieces ``<0x00>``..``<0xFF>`` (so "\\n" is id 13, as in Llama), 29871 ``▁``,
the last 256 ids 31744..31999 rare single characters (OpenVLA's action tokens), and ``<PAD>`` added
at 32000. The model is a Unigram over words of robot instructions, letters and letter pairs and
triples, with Llama's normaliser (prepend ``▁``, spaces to ``▁``) and byte fallback, written as a
``tokenizer.json`` that both the ``tokenizers`` library and transformers' LlamaTokenizerFast read.
"""
from __future__ import annotations

import itertools
import json
import string
from pathlib import Path

VOCAB_SIZE = 32000
SPIECE = "\u2581"
SPIECE_ID = 29871
N_ACTION_TOKENS = 256

WORDS = """
in out what action should the robot take to a an and on of off into onto from with at by for is it
pick up put place move push pull slide lift grasp grab open close turn rotate stack drop set
red green blue yellow orange purple pink white black brown gray grey cyan magenta
block cube box ball plate bowl cup mug bottle can lid drawer door cabinet table shelf basket tray
left right front back top bottom middle center side near far forward backward above below inside outside
small large big little tall short first second other same one two three
gripper arm hand object item thing
""".split()


def vocabulary() -> list[tuple[str, float]]:
    """(piece, log-prob score) for ids 0..31999 in id order."""
    pieces: list[tuple[str, float]] = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0)]
    pieces += [(f"<0x{b:02X}>", 0.0) for b in range(256)]
    seen = {p for p, _ in pieces} | {SPIECE}
    body: list[tuple[str, float]] = []

    def add(piece: str, score: float) -> None:
        if piece not in seen:
            seen.add(piece)
            body.append((piece, score))

    for w in WORDS:
        add(SPIECE + w, -4.0)
        add(SPIECE + w.capitalize(), -4.5)
        add(w, -6.0)
    for c in string.ascii_letters + string.digits + string.punctuation:
        add(c, -9.0)
        add(SPIECE + c, -9.5)
    for a, b in itertools.product(string.ascii_lowercase, repeat=2):
        add(a + b, -8.0)
        add(SPIECE + a + b, -8.2)
    for a, b, c in itertools.product(string.ascii_lowercase, repeat=3):
        add(a + b + c, -8.5)
    first_action = VOCAB_SIZE - N_ACTION_TOKENS
    n_fill = first_action - len(pieces) - 1  # one slot is "▁" at 29871
    if len(body) > n_fill:
        body = body[:n_fill]
    filler = 0
    while len(body) < n_fill:  # never matched by ordinary text
        add(f"<fill{filler}>", -30.0)
        filler += 1
    ordered = pieces + body
    ordered.insert(SPIECE_ID, (SPIECE, -10.0))
    # Action tokens: CJK ideographs, rare single characters as in Llama's last ids.
    ordered += [(chr(0x4E00 + i), -20.0) for i in range(N_ACTION_TOKENS)]
    assert len(ordered) == VOCAB_SIZE and ordered[SPIECE_ID][0] == SPIECE  # construction invariant
    return ordered


def write_tokenizer(out: str | Path, model_max_length: int = 2048) -> Path:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into ``out``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.Unigram(vocabulary(), unk_id=0, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPIECE), normalizers.Replace(" ", SPIECE)])
    tok.decoder = decoders.Sequence(
        [decoders.Replace(SPIECE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    # As Llama-2's tokenizer.json: BOS added by the post-processor when special tokens are on.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<unk>", "<s>", "</s>")])
    tok.add_special_tokens([AddedToken("<PAD>", normalized=False, special=True)])
    if tok.token_to_id("<PAD>") != VOCAB_SIZE:
        raise RuntimeError(f"<PAD> landed at {tok.token_to_id('<PAD>')}, expected {VOCAB_SIZE}")
    tok.save(str(out / "tokenizer.json"))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<PAD>"}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    config = {
        **special,
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": False,
        "model_max_length": model_max_length,
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out / "tokenizer.json"
