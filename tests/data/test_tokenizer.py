from __future__ import annotations

import json
import pickle
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest

from longctx.data.tokenizer import TokenizerError, load_tokenizer

TEXTS = ["Hello world.", "A longer document, with punctuation; and digits 12345.", "x"]


def test_bos_per_document_and_optional_eos(smollm2_tokenizer):
    tok = smollm2_tokenizer
    assert tok.add_bos and not tok.add_eos and tok.bos_id is not None
    plain = tok.encode_plain(TEXTS)
    docs = tok.encode_documents(TEXTS)
    for p, d in zip(plain, docs, strict=True):
        assert d[0] == tok.bos_id and list(d[1:]) == p
        assert d.dtype == np.uint16
    assert tok.count_tokens(TEXTS) == [len(d) for d in docs]
    # Plain ids are what the Rust backend gives without special tokens.
    assert plain[0] == tok.backend.encode(TEXTS[0], add_special_tokens=False).ids

    eos = load_tokenizer(None, add_bos=True, add_eos=True)
    for p, d in zip(plain, eos.encode_documents(TEXTS), strict=True):
        assert list(d) == [tok.bos_id, *p, tok.eos_id]
    assert eos.count_tokens(TEXTS) == [len(p) + 2 for p in plain]
    neither = load_tokenizer(None, add_bos=False)
    assert [list(d) for d in neither.encode_documents(TEXTS)] == plain
    assert neither.describe()["add_bos"] is False and neither.special_per_doc == 0
    # The decode of the document ids gives the text back (BOS dropped as special).
    assert tok.decode(docs[1], skip_special_tokens=True) == TEXTS[1]


def test_fingerprint_survives_save_pretrained_and_differs_between_tokenizers(
    smollm2_tokenizer, tmp_path, word_tokenizer_dir
):
    tok = smollm2_tokenizer
    tok.hf.save_pretrained(tmp_path / "resaved")
    again = load_tokenizer(tmp_path / "resaved")
    assert again.fingerprint == tok.fingerprint
    assert again.encode_plain(TEXTS) == tok.encode_plain(TEXTS)
    # The describe() entry is what manifests record.
    assert tok.describe()["sha256"] == tok.fingerprint and len(tok.fingerprint) == 64
    other = load_tokenizer(word_tokenizer_dir)
    assert other.fingerprint != tok.fingerprint
    # One added token changes the ids a text can get, so the fingerprint changes too.
    spec = json.loads((tmp_path / "resaved" / "tokenizer.json").read_text())
    spec["added_tokens"].append(
        {"id": 49152, "content": "<|new|>", "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": True}
    )
    mod = tmp_path / "modified"
    mod.mkdir()
    (mod / "tokenizer.json").write_text(json.dumps(spec))
    assert load_tokenizer(mod).fingerprint != tok.fingerprint


def _word_level(folder: Path, n_vocab: int) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{f"t{i}": i for i in range(1, n_vocab)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_dtype_uint16_up_to_65536_ids_then_uint32(tmp_path):
    small = load_tokenizer(_word_level(tmp_path / "a", 65536))
    assert small.vocab_size == 65536 and small.dtype == np.uint16
    ids = small.encode_documents(["t65535 t1"])[0]
    assert ids.dtype == np.uint16 and list(ids) == [65535, 1]  # no BOS id known: none added
    big = load_tokenizer(_word_level(tmp_path / "b", 70000))
    assert big.dtype == np.uint32
    ids = big.encode_documents(["t69999 t65536 t2"])[0]
    assert ids.dtype == np.uint32 and list(ids) == [69999, 65536, 2]


def test_pickle_is_light_and_exact(smollm2_tokenizer):
    tok = smollm2_tokenizer
    _ = tok.hf  # make sure a transformers object is attached; it must not be pickled
    blob = pickle.dumps(tok)
    assert b"transformers.tokenization" not in blob and b"TokenizersBackend" not in blob
    back = pickle.loads(blob)
    assert back.fingerprint == tok.fingerprint
    assert back.encode_plain(TEXTS) == tok.encode_plain(TEXTS)
    assert back.describe() == tok.describe()


def test_bad_spec_names_the_path(tmp_path):
    with pytest.raises(TokenizerError, match="missing-dir"):
        load_tokenizer(tmp_path / "missing-dir")


# ---- LLaMA-2 SentencePiece reference --------------------------------------------------------

NEEDLE = "\nThe best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.\n"
NEEDLE_IDS = [29871, 13, 1576, 1900, 2655, 304, 437, 297, 3087, 8970, 338, 17545, 263, 11982,
              16416, 322, 7845, 297, 11201, 2361, 4815, 373, 263, 6575, 1460, 2462, 29889, 13]
# ../shared/reference/redpajama_samples/SOURCE.md: per folder (docs, median tokens as
# len(sp.encode(text)) + 1, chars per token, share of tokens in docs > 4096 tokens).
REFERENCE_TABLE = {
    "arxiv": (20, 10648, 2.868, 0.987),
    "book": (2, 214864, 3.658, 1.000),
    "c4-rp": (1000, 305, 4.000, 0.096),
    "cc": (20, 1428, 3.643, 0.597),
    "github": (200, 642, 3.443, 0.627),
    "stackexchange": (1000, 360, 3.697, 0.101),
    "wiki": (20, 2964, 2.389, 0.666),
}


@pytest.fixture(scope="module")
def llama2(llama2_tokenizer_model, tmp_path_factory):
    pytest.importorskip("sentencepiece", reason="transformers converts tokenizer.model with it")
    folder = tmp_path_factory.mktemp("llama2")
    shutil.copy(llama2_tokenizer_model, folder / "tokenizer.model")
    return load_tokenizer(folder)


def _folder_texts(root: Path, folder: str) -> list[str]:
    # Raw records (the empty arXiv document included, as in the reference table).
    texts = []
    for f in sorted((root / folder).glob("*.jsonl")):
        with open(f, encoding="utf-8") as fh:
            texts.extend(json.loads(line)["text"] for line in fh)
    return texts


def test_llama2_tokenizer_model_loads_with_reference_ids(llama2):
    assert llama2.vocab_size == 32000 and llama2.dtype == np.uint16
    assert (llama2.bos_id, llama2.eos_id) == (1, 2)
    assert llama2.encode_plain([NEEDLE])[0] == NEEDLE_IDS
    assert llama2.encode_plain(["."])[0] == [869] and llama2.encode_plain(["a."])[0] == [263, 29889]
    assert list(llama2.encode_documents([NEEDLE])[0]) == [1, *NEEDLE_IDS]


def _check_folder(llama2, root: Path, folder: str) -> None:
    import sentencepiece as spm

    texts = _folder_texts(root, folder)
    docs, median, cpt, long_share = REFERENCE_TABLE[folder]
    counts = llama2.count_tokens(texts)
    assert len(texts) == docs
    assert abs(statistics.median(counts) - median) <= 0.5
    assert sum(len(t) for t in texts) / sum(counts) == pytest.approx(cpt, abs=5e-4)
    arr = np.asarray(counts)
    assert arr[arr > 4096].sum() / arr.sum() == pytest.approx(long_share, abs=5e-4)
    model = llama2.source_dir / "tokenizer.model"
    sp = spm.SentencePieceProcessor(model_file=str(model))
    assert counts == [len(ids) + 1 for ids in sp.encode(texts)]


@pytest.mark.parametrize("folder", ["cc", "wiki", "arxiv"])
def test_llama2_parity_with_reference_statistics(llama2, redpajama_samples, folder):
    _check_folder(llama2, redpajama_samples, folder)


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["book", "c4-rp", "github", "stackexchange"])
def test_llama2_parity_with_reference_statistics_large_folders(llama2, redpajama_samples, folder):
    _check_folder(llama2, redpajama_samples, folder)
