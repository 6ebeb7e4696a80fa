"""vcd_core.files.write_atomic on its own: where the temp file lives, what is flushed, what a failure leaves, and
that nothing is replaced unasked (the embedding, video and table writers all go through it)."""

import json
import os
import re
from pathlib import Path

import pytest

from vcd_core import files

pytestmark = pytest.mark.host_independent  # no ComfyUI here: scripts/test.sh runs it on its first host only


def writer(text: str, temps: list | None = None):
    def write(temp: str) -> None:
        if temps is not None:
            temps.append(Path(temp))
        Path(temp).write_text(text)
    return write


def test_an_existing_file_is_kept_unless_overwrite(tmp_path):
    target = tmp_path / "a.csv"
    target.write_text("mine")
    with pytest.raises(FileExistsError, match=r"^a.csv already exists in .*: pick another name or turn overwrite "
                                              r"on\.$"):
        files.write_atomic(target, writer("theirs"))
    assert target.read_text() == "mine"
    assert files.write_atomic(target, writer("theirs"), overwrite=True) == target and target.read_text() == "theirs"


def test_missing_folders_are_made_and_the_temp_file_is_hidden_beside_the_target(tmp_path):
    target = tmp_path / "runs" / "job" / "scores.csv"
    temps: list[Path] = []
    files.write_atomic(str(target), writer("x", temps))
    [temp] = temps
    assert target.read_text() == "x" and temp.parent == target.parent  # same folder: the rename is atomic
    assert temp.name.startswith(".scores.") and temp.name.endswith(".tmp") and not temp.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["scores.csv"]


def test_the_file_is_readable_by_others(tmp_path):
    target = files.write_atomic(tmp_path / "a.txt", writer("x"))  # mkstemp makes 0600
    assert os.stat(target).st_mode & 0o777 == 0o644


def test_the_file_and_then_its_folder_are_flushed(tmp_path, monkeypatch):
    flushed = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: flushed.append(os.fstat(fd).st_ino) or real(fd))
    target = files.write_atomic(tmp_path / "a.txt", writer("x"))
    assert flushed == [os.stat(target).st_ino, os.stat(tmp_path).st_ino]


def test_a_folder_that_cannot_be_opened_is_not_flushed_and_no_error(tmp_path, monkeypatch):
    """Windows cannot open folders: the folder flush is skipped there, the file's never."""
    real = os.open

    def no_folders(path, flags, *args):
        if flags & getattr(os, "O_DIRECTORY", 0) or os.path.isdir(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, flags, *args)

    monkeypatch.setattr(os, "open", no_folders)
    assert files.write_atomic(tmp_path / "a.txt", writer("x")).read_text() == "x"


def test_without_hard_links_a_failed_move_gives_the_name_back(tmp_path, monkeypatch):
    def no_links(source, destination):
        raise PermissionError(1, "Operation not permitted")

    def failed_move(source, destination):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setattr(os, "replace", failed_move)
    with pytest.raises(OSError, match="Input/output error"):
        files.write_atomic(tmp_path / "a.txt", writer("x"))
    assert list(tmp_path.iterdir()) == []  # neither the claimed name nor the temp file is left


def test_a_torch_file_that_is_not_a_checkpoint_names_torchs_reason(tmp_path):
    import torch

    torch.save({"a": torch.zeros(1)}, tmp_path / "ok.pt")
    assert torch.equal(files.load_tensors(tmp_path / "ok.pt", "fix")["a"], torch.zeros(1))
    (tmp_path / "zip.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match=r"^zip\.pt is not a readable checkpoint \((?!NoneType)\w+: .+\)\. Copy it\.$"):
        files.load_tensors(tmp_path / "zip.pt", "Copy it.")


def test_hugging_face_weights_that_never_arrived_are_named(tmp_path):
    from vcd_core.files import check_weights_downloaded

    folder = tmp_path / "dino-vits16"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"^DINO: .*dino-vits16 holds no weights \(model.safetensors or "
                                                r"pytorch_model.bin\): download the model's files into it\.$"):
        check_weights_downloaded(folder, "DINO")
    (folder / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    with pytest.raises(ValueError, match=r"^DINO: model.safetensors in .*dino-vits16 is a git-lfs pointer, not the "
                                         r"weights: the folder was cloned without git-lfs or its download stopped; "
                                         r"fetch that file again \(git lfs pull, or from the model's page\)\.$"):
        check_weights_downloaded(folder, "DINO")
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"model.safetensors in .* is empty: the folder was cloned"):
        check_weights_downloaded(folder, "DINO")
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    check_weights_downloaded(folder, "DINO")  # any real file passes: reading it is the library's job
    (folder / "pytorch_model.bin").write_text("version https://git-lfs.github.com/spec/v1\n")
    check_weights_downloaded(folder, "DINO")  # a leftover .bin pointer is never read beside the .safetensors
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"^DINO: pytorch_model.bin in .* is a git-lfs pointer"):
        check_weights_downloaded(folder, "DINO")


def test_the_encoders_and_grounding_dino_check_their_weights_first(tmp_path):
    from vcd_core import encoders, segment

    for name, kind in (("dino", "vit"), ("clip", "clip"), ("gdino", "grounding-dino")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"model_type": kind}))
        (tmp_path / name / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\n")
    for load, name in ((encoders.load_dino, "dino"), (encoders.load_clip, "clip"), (segment.load_grounding_dino, "gdino")):
        with pytest.raises(ValueError, match="is a git-lfs pointer, not the weights"):
            load(tmp_path / name)


def test_a_folder_is_proven_writable_and_left_clean(tmp_path):
    files.check_writable(tmp_path / "new" / "vcd", "name")
    assert [p.name for p in (tmp_path / "new" / "vcd").iterdir()] == []  # made, and the probe file removed
    files.check_writable(tmp_path / "new" / "vcd", "name")  # a folder that is there already is fine


@pytest.mark.parametrize("block", ["file in the way", "no permission", "no reason given"])
def test_a_folder_that_cannot_take_files_is_named(tmp_path, monkeypatch, block):
    """A plain file where a folder should be, or a folder that refuses new files (read-only, full): the input is
    named with the folder and the system's reason."""
    folder = tmp_path / "disk" / "vcd"
    if block == "file in the way":
        (tmp_path / "disk").write_text("")
        reason = "Not a directory"
    else:
        def refuse(**kwargs):
            raise PermissionError(13, "Permission denied")

        def silent(**kwargs):
            raise OSError()

        monkeypatch.setattr(files.tempfile, "mkstemp", refuse if block == "no permission" else silent)
        reason = "Permission denied" if block == "no permission" else "OSError"
    with pytest.raises(PermissionError, match=rf"^--out: cannot write to {re.escape(str(folder))} \({reason}\), "
                                              "so nothing was started; make that folder writable, or give another one\\.$"):
        files.check_writable(folder, "--out")


def test_a_file_given_as_the_folder_is_named(tmp_path):
    (tmp_path / "me").write_text("")
    with pytest.raises(NotADirectoryError, match=r"^name: .*me is a file, not a folder, so nothing was started"):
        files.check_writable(tmp_path / "me", "name")
