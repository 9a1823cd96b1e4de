from radlab.models.tokenizer import train_wordpiece

REPORTS = ["FINDINGS: No pleural effusion. IMPRESSION: Mild cardiomegaly.",
           "Small left pneumothorax; possible consolidation in the right lower lobe.",
           "Heart size is normal. The lungs are clear."] * 3


def test_same_texts_give_the_same_vocabulary_and_ids():
    a, b = train_wordpiece(REPORTS, 60), train_wordpiece(list(REPORTS), 60)
    assert a.get_vocab() == b.get_vocab()
    assert a("possible pneumothorax")["input_ids"] == b("possible pneumothorax")["input_ids"]


def test_frequent_words_are_whole_tokens_and_unseen_words_split_into_pieces():
    tok = train_wordpiece(REPORTS, 200)
    assert tok.tokenize("Cardiomegaly") == ["cardiomegaly"]
    assert "[UNK]" not in tok.tokenize("effusions")
    assert tok.tokenize("effusions")[0] == "effusion"
    ids = tok("no effusion")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
