"""A bundle cannot be bent: every way of changing one after export is refused at load, with the cause.

Each case starts from a fresh copy of one exported tiny bundle and changes one thing: a file's
bytes, the listing, a path in the manifest, the manifest itself (norm_stats), its hash file.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

import rlrc_runtime as r
from rlrc_runtime.cli import main as predict_main
from rlrc_runtime.errors import MissingFileError
from rlrc_runtime.manifest import MANIFEST_FILE, MANIFEST_HASH_FILE, BundleError, ChecksumError, read_manifest


def edit_manifest(bundle: Path, change, rehash: bool = True) -> None:
    """Apply ``change`` to the manifest's JSON; with ``rehash``, also rewrite manifest.sha256 to match, as a
    forger would, so that the check under test is the only one left to catch it."""
    raw = json.loads((bundle / MANIFEST_FILE).read_text())
    change(raw)
    text = json.dumps(raw).encode()
    (bundle / MANIFEST_FILE).write_bytes(text)
    if rehash:
        (bundle / MANIFEST_HASH_FILE).write_text(hashlib.sha256(text).hexdigest() + "  manifest.json\n")


def flip_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


def test_an_untouched_copy_loads(bundle_copy):
    read_manifest(bundle_copy)


def test_edited_norm_stats_are_refused(bundle_copy):
    def scale(raw):
        stats = raw["norm_stats"]["tiny_demo"]["action"]
        stats["q99"] = [10 * v for v in stats["q99"]]

    edit_manifest(bundle_copy, scale, rehash=False)
    with pytest.raises(ChecksumError, match=r"manifest\.json.*edited after export"):
        r.load_policy(bundle_copy)


def test_manifest_without_its_hash_is_refused(bundle_copy):
    (bundle_copy / MANIFEST_HASH_FILE).unlink()
    with pytest.raises(MissingFileError, match=r"manifest\.sha256 is missing"):
        read_manifest(bundle_copy)


def test_dropping_a_files_entry_does_not_let_a_tampered_file_through(bundle_copy):
    flip_byte(bundle_copy / "llm.onnx.data")
    edit_manifest(bundle_copy, lambda raw: raw["files"].pop("llm.onnx.data"))
    with pytest.raises(BundleError, match=r"llm\.onnx\.data.*not listed"):
        read_manifest(bundle_copy)


def test_dropping_an_unreferenced_files_entry_is_refused(bundle_copy):
    flip_byte(bundle_copy / "tokenizer.json")
    edit_manifest(bundle_copy, lambda raw: raw["files"].pop("tokenizer.json"))
    with pytest.raises(BundleError, match=r"does not list: \['tokenizer\.json'\]"):
        read_manifest(bundle_copy)


def test_an_added_file_is_refused(bundle_copy):
    (bundle_copy / "extra.onnx").write_bytes(b"\0" * 16)
    with pytest.raises(BundleError, match=r"does not list: \['extra\.onnx'\]"):
        read_manifest(bundle_copy)


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.onnx", "sub/../../outside.onnx"])
def test_paths_that_leave_the_bundle_are_refused(bundle_copy, path):
    def point_out(raw):
        raw["graphs"]["vision"]["file"] = path
        raw["files"][path] = "0" * 64

    edit_manifest(bundle_copy, point_out)
    with pytest.raises(BundleError, match="must be relative and stay inside the bundle"):
        read_manifest(bundle_copy)
    with pytest.raises(BundleError, match="must be relative"):
        read_manifest(bundle_copy, verify=False)  # the path check does not depend on verification


def test_a_symlink_out_of_the_bundle_is_refused(bundle_copy, tmp_path):
    outside = tmp_path / "outside.json"
    shutil.copy2(bundle_copy / "tokenizer.json", outside)
    (bundle_copy / "tokenizer.json").unlink()
    os.symlink(outside, bundle_copy / "tokenizer.json")  # same bytes, so its sha256 still matches
    with pytest.raises(BundleError, match="leads outside the bundle"):
        read_manifest(bundle_copy)


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "JSON list, not an object"),
    ('{"format_version": "1"}', "format_version='1' is not an integer"),
    ('{"format_version": 1, "graphs": []}', "malformed"),
    ("\xff\xfe", "not valid JSON"),
])
def test_malformed_manifests_are_clear_errors(bundle_copy, content, message):
    (bundle_copy / MANIFEST_FILE).write_bytes(content.encode("latin-1"))
    with pytest.raises(BundleError, match=message):
        read_manifest(bundle_copy, verify=False)


def test_the_cli_reports_a_tampered_bundle_with_exit_2(bundle_copy, capsys):
    flip_byte(bundle_copy / "vision.onnx.data")
    assert predict_main(["--policy", str(bundle_copy)]) == 2
    err = capsys.readouterr().err
    assert "vision.onnx.data" in err and "Traceback" not in err
