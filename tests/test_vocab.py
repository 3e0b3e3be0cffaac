import numpy as np

from pyterrier_d2s.vocab import Vocabulary, ids_to_csr


def test_offline_default_is_bert_uncased(vocab):
    assert len(vocab) == 30522
    assert vocab.tokens[:1] == ["[PAD]"]
    assert vocab.token_to_id["[CLS]"] == 101 and vocab.token_to_id["dog"] == 3899


def test_special_tokens_are_masked(vocab):
    special = vocab.special_mask
    for tok in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused993]"]:
        assert special[vocab.token_to_id[tok]], tok
    for tok in ["dog", "the", "##s", "!", "[", "]"]:
        assert not special[vocab.token_to_id[tok]], tok
    # 5 structural tokens + [unused0..993]
    assert special.sum() == 5 + 994


def test_token_ids_are_unique_sorted_and_lowercased(vocab):
    (ids,) = vocab.token_ids(["A dog, a DOG and a surfboard"])
    toks = vocab.decode(ids)
    assert sorted(toks) == sorted({"a", "dog", ",", "and", "surf", "##board"})
    assert list(ids) == sorted(ids)


def test_document_frequency_hand_computed(vocab):
    texts = ["a dog", "a cat", "the dog barks at a dog"]
    df = vocab.document_frequency(texts)
    t = vocab.token_to_id
    assert df[t["a"]] == 1.0
    assert df[t["dog"]] == 2 / 3
    assert df[t["cat"]] == 1 / 3
    assert df[t["zebra"]] == 0.0
    assert df.shape == (30522,)


def test_ids_to_csr():
    m = ids_to_csr([np.array([1, 3]), np.array([], dtype=np.int64), np.array([0])], 5)
    assert m.toarray().tolist() == [[0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]]


def test_vocabulary_from_saved_dir(tmp_path, vocab):
    vocab.save(tmp_path)
    again = Vocabulary(tmp_path)
    assert again.tokens == vocab.tokens
    assert [list(x) for x in again.token_ids(["two dogs"])] == [
        list(x) for x in vocab.token_ids(["two dogs"])
    ]
