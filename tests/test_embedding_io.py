"""Identity embedding files: the authors' and A1111 files load; ours round-trip, atomically and safely."""

from pathlib import Path

import pytest
import torch

from vcd_core import embedding_io
from vcd_core.embedding_io import Embedding


@pytest.mark.parametrize("name,tokens", [("ironman", 4), ("mona", 4), ("emotion-smile", 2)])
def test_authors_and_a1111_files_load(shared_dir, name, tokens):
    emb = embedding_io.read_embedding(shared_dir / "data" / "magic-me-embeddings" / f"{name}.pt")
    assert (emb.tokens, emb.width) == (tokens, 768) and emb.vectors.dtype == torch.float32
    assert torch.isfinite(emb.vectors).all() and emb.vectors.abs().sum() > 0


def test_round_trip_with_metadata(tmp_path):
    emb = Embedding(torch.randn(4, 768), {"tokens": "4", "class_word": "woman"})
    path = embedding_io.write_embedding(tmp_path, "ann", emb)
    assert path.name == "ann.safetensors" and 12_288 < path.stat().st_size < 17_000  # 4 x 768 fp32 + header
    back = embedding_io.read_embedding(path)
    assert torch.equal(back.vectors, emb.vectors) and back.metadata == emb.metadata
    assert [p.name for p in tmp_path.iterdir()] == ["ann.safetensors"]  # no temp file left


def test_existing_file_is_kept_unless_overwrite(tmp_path):
    first = Embedding(torch.zeros(4, 768))
    embedding_io.write_embedding(tmp_path, "ann", first)
    with pytest.raises(FileExistsError, match="overwrite"):
        embedding_io.write_embedding(tmp_path, "ann", Embedding(torch.ones(4, 768)))
    assert torch.equal(embedding_io.read_embedding(tmp_path / "ann.safetensors").vectors, first.vectors)
    embedding_io.write_embedding(tmp_path, "ann", Embedding(torch.ones(4, 768)), overwrite=True)
    assert embedding_io.read_embedding(tmp_path / "ann.safetensors").vectors.sum() == 4 * 768


@pytest.mark.parametrize("name", ["../evil", "a/b", "a\\b", "..", "", ".hidden", "x" * 65, "ann\n", "ann\r\n", "a\nb"])
def test_names_cannot_escape_the_folder(tmp_path, name):
    with pytest.raises(ValueError, match="not allowed"):
        embedding_io.write_embedding(tmp_path / "inner", name, Embedding(torch.zeros(4, 768)))
    assert not (tmp_path / "inner").exists() and not (tmp_path / "evil.safetensors").exists()


def racing_save(monkeypatch, write_other):
    """save_file that, once the temp file is written, lets ``write_other`` act as another process would."""
    real = embedding_io.save_file

    def save(tensors, path, metadata=None):
        real(tensors, path, metadata=metadata)
        write_other()

    monkeypatch.setattr(embedding_io, "save_file", save)


def test_a_file_created_after_the_exists_check_is_never_overwritten(tmp_path, monkeypatch):
    target = tmp_path / "ann.safetensors"
    racing_save(monkeypatch, lambda: target.write_bytes(b"someone else's file"))
    with pytest.raises(FileExistsError, match="ann.safetensors.*overwrite"):
        embedding_io.write_embedding(tmp_path, "ann", Embedding(torch.zeros(4, 768)))
    assert target.read_bytes() == b"someone else's file" and [p.name for p in tmp_path.iterdir()] == ["ann.safetensors"]


def test_overwrite_replaces_a_file_created_meanwhile(tmp_path, monkeypatch):
    target = tmp_path / "ann.safetensors"
    racing_save(monkeypatch, lambda: target.write_bytes(b"older"))
    embedding_io.write_embedding(tmp_path, "ann", Embedding(torch.ones(4, 768)), overwrite=True)
    assert embedding_io.read_embedding(target).vectors.sum() == 4 * 768 and len(list(tmp_path.iterdir())) == 1


def test_without_hard_links_the_name_is_still_claimed_exclusively(tmp_path, monkeypatch):
    """A filesystem without hard links (FAT, some network shares): same guarantees through O_EXCL."""
    def no_links(source, destination):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(embedding_io.os, "link", no_links)
    path = embedding_io.write_embedding(tmp_path, "ann", Embedding(torch.ones(4, 768)))
    assert embedding_io.read_embedding(path).vectors.sum() == 4 * 768 and len(list(tmp_path.iterdir())) == 1
    target = tmp_path / "bob.safetensors"
    racing_save(monkeypatch, lambda: target.write_bytes(b"someone else's file"))
    with pytest.raises(FileExistsError, match="bob.safetensors"):
        embedding_io.write_embedding(tmp_path, "bob", Embedding(torch.zeros(4, 768)))
    assert target.read_bytes() == b"someone else's file" and len(list(tmp_path.iterdir())) == 2


def test_interrupt_mid_write_leaves_no_half_file(tmp_path, monkeypatch):
    def half_then_interrupt(tensors, path, metadata=None):
        Path(path).write_bytes(b"\x00" * 100)  # half a file on disk when the interrupt lands
        raise KeyboardInterrupt

    monkeypatch.setattr(embedding_io, "save_file", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        embedding_io.write_embedding(tmp_path, "ann", Embedding(torch.zeros(4, 768)))
    assert list(tmp_path.iterdir()) == []


def test_core_clip_text_encode_reads_our_file(inproc, tmp_path):
    """Core's embedding loader takes our file as embedding:NAME: the conditioning changes with the vectors."""
    clip = inproc.tiny.tiny_clip(0, (str(tmp_path),))
    plain = clip.encode_from_tokens(clip.tokenize("a photo of a woman"))
    embedding_io.write_embedding(tmp_path, "ann", Embedding(torch.randn(4, 768, generator=torch.Generator().manual_seed(0))))
    tokens = clip.tokenize("a photo of embedding:ann woman")
    assert sum(1 for t in tokens["l"][0] if not isinstance(t[0], int)) == 4  # four embedding vectors injected
    with_id = clip.encode_from_tokens(tokens)
    assert not torch.allclose(plain, with_id)


def test_files_answering_a_name_are_found_at_any_depth_and_extension(tmp_path):
    """What ComfyUI's embedding:NAME could load: NAME, NAME.safetensors/.pt/.bin in any folder under any root."""
    first, second = tmp_path / "embeddings", tmp_path / "extra"
    clashes = [first / "mona.pt", first / "a" / "b" / "mona.bin", first / "vcd" / "mona.safetensors", first / "bare" / "mona",
               second / "Mona.safetensors"]
    for path in clashes + [first / "monalisa.pt", first / "mona.txt", first / "mona.pt.old", second / "x" / "amona.bin"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert embedding_io.files_answering([first, second], "mona") == sorted(clashes)
    assert embedding_io.files_answering([first, second], "monalisa") == [first / "monalisa.pt"]
    assert embedding_io.files_answering([first, tmp_path / "missing"], "ann") == []


def test_fingerprint_is_the_sha256_of_float32_bytes_and_utf8():
    import hashlib

    import numpy as np

    want = hashlib.sha256(np.array([1.0, 2.0], dtype=np.float32).tobytes() + "ann é".encode()).hexdigest()[:16]
    assert embedding_io.fingerprint(torch.tensor([1, 2]), "ann é") == want  # integers hashed as float32
    assert embedding_io.fingerprint("ann é", torch.tensor([1.0, 2.0])) != want  # order counts


def test_the_vectors_key_is_emb_params_then_clip_l_then_the_first(tmp_path):
    from safetensors.torch import save_file

    a, b, c = torch.zeros(1, 4), torch.ones(2, 4), torch.full((3, 4), 2.0)
    for tensors, want in (({"other": a, "clip_l": b}, b), ({"aaa": a, "clip_l": b}, b), ({"clip_l": b, "emb_params": c}, c),
                          ({"zeta": a}, a)):
        save_file(tensors, str(tmp_path / "e.safetensors"))
        assert torch.equal(embedding_io.read_embedding(tmp_path / "e.safetensors").vectors, want)
    save_file({}, str(tmp_path / "none.safetensors"))
    with pytest.raises(ValueError, match=r"^none\.safetensors: the file holds no tensor$"):
        embedding_io.read_embedding(tmp_path / "none.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ValueError, match=r"^cut\.safetensors: not a readable \.safetensors file \(.*\); copy it again or "
                                         r"train it again\.$"):
        embedding_io.read_embedding(tmp_path / "cut.safetensors")


def test_pt_and_bin_embeddings_and_their_metadata(tmp_path):
    vectors = torch.randn(2, 768)
    torch.save({"string_to_param": {"*": vectors}, "name": "ann", "step": 500, "sd_checkpoint_name": None},
               tmp_path / "ann.pt")
    emb = embedding_io.read_embedding(tmp_path / "ann.pt")
    assert torch.equal(emb.vectors, vectors) and emb.metadata == {"name": "ann", "step": "500"}
    torch.save({"string_to_param": {"*": vectors}, "sd_checkpoint_name": "v1-5-pruned"}, tmp_path / "a1111.pt")
    assert embedding_io.read_embedding(tmp_path / "a1111.pt").metadata == {"sd_checkpoint_name": "v1-5-pruned"}
    torch.save({"<ann>": vectors[0]}, tmp_path / "learned_embeds.bin")  # diffusers: {token: [D]}
    assert embedding_io.read_embedding(tmp_path / "learned_embeds.bin").vectors.shape == (1, 768)
    torch.save({"a": vectors, "b": vectors}, tmp_path / "two.pt")
    with pytest.raises(ValueError, match=r"^two\.pt: not an embedding file \(no 'string_to_param' entry\)$"):
        embedding_io.read_embedding(tmp_path / "two.pt")
    with pytest.raises(ValueError, match=r"^ann\.txt: embeddings are \.safetensors or \.pt files$"):
        embedding_io.read_embedding(tmp_path / "ann.txt")


def test_names_are_found_through_linked_folders(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "Ann.PT").write_bytes(b"")
    (tmp_path / "embeddings").mkdir()
    (tmp_path / "embeddings" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert embedding_io.files_answering([tmp_path / "embeddings"], "ann") == [tmp_path / "embeddings" / "linked" / "Ann.PT"]


@pytest.mark.parametrize("name", ["a..b", "a\n", "../a", "a/b", "", ".a", "a" * 65])
def test_bad_names_are_refused_with_what_is_allowed(name):
    with pytest.raises(ValueError, match=r"^name .* is not allowed: use 1-64 letters, digits, '_', '-' or '\.', "
                                         r"starting with a letter or digit, with no path separators or '\.\.'\.$"):
        embedding_io.check_name(name)
    assert embedding_io.check_name("a.b-c_1") == "a.b-c_1"


class Exploit:
    def __reduce__(self):
        return (print, ("this ran code from a pickle",))


def test_unsafe_broken_empty_and_diverged_files_are_named_errors(tmp_path, capsys):
    import pickle

    from safetensors.torch import save_file

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"string_to_param": {"*": Exploit()}}, protocol=2))
    with pytest.raises(ValueError, match=r"^evil\.pt holds more than tensors, so it is not loaded \(a pickle like that "
                                         r"can run code\)\. Copy it again, or use the \.safetensors version of the "
                                         r"embedding \(or one from a source you trust, converted to \.safetensors\)\.$"):
        embedding_io.read_embedding(tmp_path / "evil.pt")
    (tmp_path / "framed.pt").write_bytes(pickle.dumps({"string_to_param": {"*": Exploit()}}, protocol=5))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for name in ("framed", "junk"):  # to torch's tensors-only loader a damaged file and a framed pickle look alike
        with pytest.raises(ValueError, match=rf"^{name}\.pt is not a tensors-only file \(damaged, or a pickle holding "
                                             r"more than tensors, which could run code\), so it is not loaded\. Copy "
                                             r"it again, or use the \.safetensors version"):
            embedding_io.read_embedding(tmp_path / f"{name}.pt")
    assert "ran code" not in capsys.readouterr().out
    (tmp_path / "short.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"^short\.pt is not a readable checkpoint \(EOFError\)\. Copy it again, or "
                                         r"use the \.safetensors version"):
        embedding_io.read_embedding(tmp_path / "short.pt")
    for name, vectors in (("empty", torch.zeros(0, 768)), ("scalar", torch.tensor(1.0))):
        save_file({"emb_params": vectors}, str(tmp_path / f"{name}.safetensors"))
        with pytest.raises(ValueError, match=rf"^{name}\.safetensors: the embedding holds no vectors \(0 tokens\); "
                                             r"train it again\.$"):
            embedding_io.read_embedding(tmp_path / f"{name}.safetensors")
    torch.save({"string_to_param": {"*": [1.0, 2.0]}}, tmp_path / "listed.pt")
    with pytest.raises(ValueError, match=r"^listed\.pt: the embedding holds no vectors"):
        embedding_io.read_embedding(tmp_path / "listed.pt")
    save_file({"emb_params": torch.tensor([[1.0, float("nan")]])}, str(tmp_path / "nan.safetensors"))
    with pytest.raises(ValueError, match=r"^nan\.safetensors: the embedding's vectors are not finite \(NaN or inf: a "
                                         r"diverged training run\); train it again with a lower learning rate\.$"):
        embedding_io.read_embedding(tmp_path / "nan.safetensors")
    with pytest.raises(ValueError, match=r"^ann\.safetensors: the vectors are not finite \(NaN/inf\), so nothing was "
                                         r"written\.$"):
        embedding_io.write_embedding(tmp_path, "ann", Embedding(torch.tensor([[float("inf")]])))
    assert not (tmp_path / "ann.safetensors").exists()


def test_our_files_hold_emb_params_as_the_authors_files_do(tmp_path):
    from safetensors import safe_open

    path = embedding_io.write_embedding(tmp_path, "ann", Embedding(torch.ones(4, 768), {"step": 5}))
    with safe_open(str(path), framework="pt") as f:
        assert list(f.keys()) == ["emb_params"] and f.metadata() == {"step": "5"}
