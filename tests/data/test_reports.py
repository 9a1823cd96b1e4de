from data import fixtures as fx
from radlab.data.reports import labelled_text, parse_sections, split_sentences


def test_sections_of_a_mimic_style_report():
    sections = parse_sections(fx.MIMIC_REPORT)
    assert list(sections) == ["examination", "indication", "findings", "impression"]
    assert sections["findings"] == "There is a small left pleural effusion. No pneumothorax."
    assert sections["impression"] == "Small left pleural effusion."


def test_inline_headings_synonyms_and_repeats():
    text = "Preliminary read. HISTORY: cough. Findings: clear lungs. CONCLUSION: normal. Impression: no change."
    sections = parse_sections(text)
    assert sections == {"text": "Preliminary read.", "indication": "cough.", "findings": "clear lungs.",
                        "impression": "normal. no change."}
    assert labelled_text(text) == "clear lungs.\n\nnormal. no change."
    assert labelled_text("INDICATION: evaluate for pneumonia. COMPARISON: none. Lungs clear.") == ""
    assert labelled_text("Heart normal. No effusion.") == "Heart normal. No effusion."


def test_capitalised_heading_needs_no_sentence_end_before_it():
    text = "FINDINGS: No focal infiltrates IMPRESSION: Emphysema."
    assert parse_sections(text) == {"findings": "No focal infiltrates", "impression": "Emphysema."}
    assert split_sentences(labelled_text(text)) == ["No focal infiltrates", "Emphysema."]
    assert parse_sections("Findings: as in prior findings: stable.") == {"findings": "as in prior findings: stable."}


def test_sentences_respect_abbreviations_decimals_and_lists():
    text = ("1. A 3.5 cm nodule, e.g. a granuloma, is seen. 2. Dr. Smith was told at 3 p.m. today.\n\n"
            "Heart size normal\n3) No effusion")
    assert split_sentences(text) == ["A 3.5 cm nodule, e.g. a granuloma, is seen.", "Dr. Smith was told at 3 p.m. today.",
                                     "Heart size normal", "No effusion"]
    assert split_sentences("") == [] and split_sentences("No acute process.") == ["No acute process."]
