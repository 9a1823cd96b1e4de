"""A rule-based finding extractor for chest X-ray reports, in the NegEx / CheXpert-labeler style.

Per sentence, every mention of a canonical finding (``MENTIONS``; not inside a "non"/"un" word such as
"noncalcified") is classified by the cues around it in its clause: a hypothetical ("evaluate for", "rule out",
"may not be demonstrated") gives no label; uncertainty phrases that contain a negation word ("cannot
exclude") -> -1; then negation ("no", "without", "free of", "negative for", "resolved", "unlikely", ...) -> 0;
then uncertainty ("possible", "may", "suggest", ...) -> -1; else 1. Phrases that only look like a cue ("no
interval change in", "not seen on prior") block the cues they overlap (``PSEUDO_NEGATION``). Phrases that
state a finding is normal ("heart size is normal") give 0 (``NORMAL``). Negation-like cues (hypothetical,
negated uncertainty, negation) reach ``NEGATION_WINDOW`` words forward (lists such as "no consolidation,
effusion or pneumothorax"), uncertainty cues ``UNCERTAIN_WINDOW``, post-cues ``POST_WINDOW`` words back,
never across a clause break ("but", "however", ";", "there is", ...); a post-cue stops at another cue, and
at another mention unless the earlier one has no own cue ("atelectasis or effusion cannot be excluded"
vs "no pneumothorax, effusion cannot be excluded"). A pre-cue inside an earlier mention's post-cue does not
reach forward over a comma (the "not" of "effusion is not seen, small pneumothorax"), though it still heads
a mention right after it ("tortuous aorta, cannot exclude aortic aneurysm"). A pre-cue
that reaches over a comma and an earlier mention (a list head: "no pneumothorax, effusion") counts only for
mentions without a post-cue of their own, so "no pneumothorax, effusion is possible" gives 0 / -1 while "no
consolidation, effusion or pneumothorax" and "no pneumothorax or effusion is suspected" give 0 throughout. Report labels
combine sentences as positive > uncertain > negative, NaN for findings never mentioned; positives and
uncertains propagate to parents; no_finding is 1 when no finding but support devices is positive or
uncertain (the CheXpert rule), else 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from radlab.data.records import RecordTable, label_column
from radlab.data.reports import labelled_text, split_sentences
from radlab.data.sources.common import NAN, combine
from radlab.data.taxonomy import FINDING_NAMES, NEGATIVE, POSITIVE, UNCERTAIN, propagate_to_parents

_N = r"(?:\w+ ){0,2}"  # up to two filler words
_NOT_PREFIXED = r"(?<!non)(?<!non-)(?<!un)"  # "noncalcified", "non-enlarged", "uncalcified" mention nothing
MENTIONS: dict[str, tuple[str, ...]] = {
    "enlarged_cardiomediastinum": (
        r"widen\w* (?:of )?(?:the )?(?:superior )?mediastin\w*", r"(?:enlarged|widened|prominent) (?:cardio)?mediastin\w*",
        r"mediastin\w*(?: \w+){0,3} (?:widen\w*|enlarged|enlargement)",
        r"cardiomediastinal (?:silhouette|contours?)(?: \w+){0,2} (?:enlarged|widened|prominent)"),
    "cardiomegaly": (
        r"cardiomegaly", r"cardiac (?:enlargement|hypertrophy)", r"(?:enlarged|large|prominent) (?:heart|cardiac)",
        r"enlargement of the (?:heart|cardiac)", r"(?:heart|cardiac) enlargement", r"borderline (?:heart|cardiac) size",
        r"(?:heart|cardiac silhouette|cardiac shadow|cardiac size|heart size)(?: \w+){0,3} (?:enlarged|increased|large)\b"),
    "aortic_enlargement": (
        r"(?:tortuous|ectatic|enlarged|dilated|unfolded|elongated|uncoiled),? " + _N + r"aort\w*",
        r"aort\w*(?: \w+){0,3} (?:tortuous|tortuosity|ectatic|ectasia|enlarged|enlargement|dilated|dilatation|"
        r"unfolded|unfolding|elongated|elongation|aneurysm\w*)",
        r"(?:tortuosity|unfolding|ectasia|enlargement|dilatation) of the " + _N + r"aorta"),
    "lung_opacity": (r"opaci\w*", r"densit(?:y|ies)", r"air ?space (?:disease|opacit\w*|process)", r"\bhazy\b"),
    "lung_lesion": (r"(?:lung|pulmonary|parenchymal|cavitary|focal|spiculated) lesions?", r"neoplasm\w*",
                    r"tumou?rs?\b", r"carcinoma", r"malignan\w*", r"metasta\w*", r"\bcancer"),
    "nodule": (rf"(?<!{_NOT_PREFIXED}calcified )(?<!granulomatous )nodul(?:e|es|ar|arity)\b",),
    "mass": (r"\bmass(?:es|-like)?\b",),
    "lung_cavity": (r"cavit(?:y|ies|ary|ation)",),
    "lung_cyst": (r"(?:lung|pulmonary|parenchymal) cysts?",),
    "edema": (r"(?<!soft tissue )\bo?edema", r"(?:pulmonary|vascular|venous|interstitial) congestion",
              r"congestive heart failure", r"\bchf\b", r"cephalization"),
    "consolidation": (r"consolidat\w*",),
    "pneumonia": (r"pneumonia\w*", r"pneumonitis"),
    "atelectasis": (r"atelecta\w*", r"(?:lung|lobar|lobe) collapse", r"collapse of the", r"\bcollapsed\b"),
    "infiltration": (r"infiltrat\w*",),
    "interstitial_lung_disease": (r"interstitial (?:lung )?(?:disease|fibrosis|pattern|process)",
                                  r"\breticul\w*", r"\bild\b"),
    "fibrosis": (r"fibros[ie]s", r"fibrotic", r"honeycomb\w*"),
    "tuberculosis": (r"tubercul\w*", r"\btb\b", r"mycobacteri\w*"),
    "calcification": (r"calcifi\w*", r"calcinosis"),
    "emphysema": (r"(?<!subcutaneous )emphysema\w*", r"\bbullae?\b", r"\bbullous"),  # bullae: as IU X-ray codes them
    "copd": (r"\bcopd\b", r"chronic obstructive"),
    "enlarged_pulmonary_artery": (
        r"(?:enlarged|prominent|dilated) " + _N + r"pulmonary arter\w*",
        r"pulmonary arter\w*(?: \w+){0,3} (?:enlarged|enlargement|prominent|prominence|dilated|dilatation)",
        r"pulmonary (?:arterial )?hypertension"),
    "mediastinal_shift": (r"mediastinal shift", r"shift\w* of the mediastin\w*", r"mediastin\w*(?: \w+){0,2} shifted",
                          r"tracheal deviation", r"deviation of the trachea"),
    "pneumothorax": (r"pneumothora\w*",),
    "pleural_effusion": (r"(?<!pericardial )\beffusions?", r"pleural fluid", r"hydrothora\w*"),
    "pleural_thickening": (r"pleural " + _N + r"thickening", r"thickening of the " + _N + r"pleura",
                           r"(?:pleural|apical) (?:cap|capping)", r"pleural scarring"),
    "pleural_other": (r"pleural (?:plaques?|calcification\w*|abnormalit\w*)", r"fibrothorax"),
    "fracture": (r"fractur\w*", r"\bfx\b"),
    "hernia": (r"hernia\w*",),
    "scoliosis": (r"scolio\w*", r"curvature of the " + _N + r"spine", r"(?:spinal|spine) curvature",
                  r"(?:dextro|levo)-?curvature"),
    "support_devices": (
        r"(?:picc|central venous|central|venous|dialysis|swan[- ]ganz|jugular|subclavian|arterial) (?:line|catheter)s?",
        r"catheters?\b", r"pacemaker\w*", r"\bpacer\b", r"defibrillator", r"\ba?icd\b", r"endotracheal",
        r"\bet tube", r"\bett\b", r"(?:nasogastric|orogastric|feeding|enteric|ng|og|dobhoff|chest|drainage|gastric) tubes?",
        r"tracheostomy", r"\bstents?\b", r"(?:sternotomy|cerclage) wires?", r"(?:surgical|vascular) clips?",
        r"port-?a-?cath", r"(?:prosthetic|mechanical) " + _N + r"valve", r"valve (?:replacement|prosthesis)",
        r"\bhardware\b", r"(?<!cholecystectomy )\bclips?\b", r"\bleads\b", r"generator", r"\bdevices?\b", r"\bpicc\b"),
}
_NORMAL_HEART = r"(?:heart|cardiac) (?:size|silhouette|shadow)(?: \w+){0,4} (?:normal|within normal limits|unremarkable)"
_NORMAL_MEDIASTINUM = (r"(?:cardio)?mediastin\w*(?: (?:silhouette|contours?|structures))?(?: \w+){0,3} "
                       r"(?:normal|within normal limits|unremarkable)")
NORMAL: dict[str, tuple[str, ...]] = {
    "cardiomegaly": (_NORMAL_HEART, r"normal (?:heart|cardiac) (?:size|silhouette)", r"heart (?:is )?(?:of )?normal (?:size|in size)",
                     r"cardiomediastinal (?:silhouette|contours?)(?: \w+){0,3} (?:normal|within normal limits|unremarkable)"),
    "enlarged_cardiomediastinum": (_NORMAL_MEDIASTINUM, r"normal (?:cardio)?mediastin\w*"),
    "lung_opacity": (r"lungs? (?:are |is )?(?:\w+ )?clear\b", r"clear lungs?"),
}
UNCERTAIN_NEGATED = (r"can ?not (?:be )?(?:entirely |completely |definitely )?(?:excluded|exclude|ruled out|rule out)",
                     r"not (?:be )?(?:entirely |completely |definitely )?(?:excluded|ruled out)",
                     r"difficult to (?:completely |entirely )?exclude", r"could not exclude")
HYPOTHETICAL_PRE = (r"evaluat\w* for", r"evaluat\w* of (?!the |this |these |that |those )", r"rule[- ]?out",
                    r"\bto exclude")
HYPOTHETICAL_POST = (r"may not be (?:demonstrated|detected|seen|visible)",)
_MODIFIERS = r"(?:(?:significant|interval|appreciable) ){0,2}"
PSEUDO_NEGATION = (rf"no {_MODIFIERS}(?:change|increase|decrease|worsening)", rf"without {_MODIFIERS}change",
                   r"not (?:significantly )?(?:changed|increased)", r"not only", r"no longer (?:require|need)",
                   r"not (?:seen|present|visualized|identified) (?:on|in) (?:the )?(?:prior|previous)")
NEGATION_PRE = (r"\bno\b", r"\bnot\b", r"\bwithout\b", r"free of", r"negative for", r"absence of", r"\babsent\b",
                r"resolution of", r"resolved", r"clear of", r"rather than", r"\bnor\b", r"\bneither\b",
                r"removal of", r"\bunlikely\b", r"less likely")
NEGATION_POST = (r"(?:is|are|was|were|has|have been)? ?(?:not seen|not identified|not present|not visualized|absent)",
                 r"(?:is|are|was|were) (?:unlikely|less likely|not likely)",
                 r"(?:has|have)? ?(?:resolved|cleared|been removed|removed)", r"no longer (?:seen|visible|present|evident)",
                 r"is gone")
UNCERTAIN_PRE = (r"possib\w*", r"\bmay\b", r"\bmight\b", r"\bcould\b", r"suggest\w*", r"suspicio\w*", r"suspect\w*",
                 r"question(?:able)?(?: of)?", r"concern(?:ing)? for", r"\blikely\b", r"probabl[ey]", r"presum\w*",
                 r"\bversus\b", r"\bvs\b", r"differential", r"borderline", r"equivocal", r"indeterminate",
                 r"consider\w*", r"cannot be distinguished", r"\bvague\w*", r"\bpotential\w*")
UNCERTAIN_POST = (r"(?:is|are) (?:not )?(?:entirely )?(?:excluded|possible|suspected|questioned|likely)",
                  r"cannot be excluded", r"\?")
TERMINATORS = (r"\bbut\b", r"\bhowever\b", r"\balthough\b", r"\bthough\b", r"\bexcept\b", r"aside from",
               r"apart from", r"\bwhereas\b", r"\bwhich\b", r"\botherwise\b", r";", r"\bwith the exception\b",
               r"\bthere (?:is|are)\b", r"\band (?:the|there|a|an)\b")
NEGATION_WINDOW, UNCERTAIN_WINDOW, POST_WINDOW = 12, 6, 4
NOT_FINDINGS = {"no_finding", "support_devices"}
PRE_KINDS = ("hypothetical_pre", "uncertain_negated", "negation_pre", "uncertain_pre")
POST_KINDS = ("hypothetical_post", "uncertain_negated", "negation_post", "uncertain_post")


def _compile(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


_MENTION_RE = {name: _compile(tuple(f"{_NOT_PREFIXED}(?:{q})" for q in p)) for name, p in MENTIONS.items()}
_NORMAL_RE = {name: _compile(p) for name, p in NORMAL.items()}
_CUES = {kind: _compile(p) for kind, p in {
    "hypothetical_pre": HYPOTHETICAL_PRE, "hypothetical_post": HYPOTHETICAL_POST,
    "uncertain_negated": UNCERTAIN_NEGATED, "pseudo": PSEUDO_NEGATION, "negation_pre": NEGATION_PRE,
    "negation_post": NEGATION_POST, "uncertain_pre": UNCERTAIN_PRE, "uncertain_post": UNCERTAIN_POST}.items()}
_TERMINATOR_RE = _compile(TERMINATORS)
_WORD = re.compile(r"\b(?!x{2,}\b)\w+")  # words, not de-identification marks ("XXXX") inside a cue's window


@dataclass(frozen=True)
class ReportLabels:
    """Report-level labels (finding -> 1/0/-1/NaN) and per-sentence labels (mentioned findings only)."""

    labels: dict[str, float]
    sentences: list[tuple[str, dict[str, float]]]


def _words(text: str) -> int:
    return len(_WORD.findall(text))


def _cue_spans(sentence: str) -> dict[str, list[tuple[int, int]]]:
    spans = {kind: [m.span() for m in regex.finditer(sentence)] for kind, regex in _CUES.items()}
    blocked = spans["uncertain_negated"] + spans["pseudo"]
    for kind in ("hypothetical_pre", "hypothetical_post", "negation_pre", "negation_post", "uncertain_pre",
                 "uncertain_post"):
        spans[kind] = [s for s in spans[kind] if not any(b[0] < s[1] and s[0] < b[1] for b in blocked)]
    return spans


def _inside(lo: int, hi: int, spans: list[tuple[int, int]]) -> bool:
    return any(lo <= a and b <= hi for a, b in spans)


@dataclass(frozen=True)
class _Sentence:
    """One lower-cased sentence: its cue spans by kind, clauses, and all cue and mention spans."""

    text: str
    spans: dict[str, list[tuple[int, int]]]
    clauses: list[tuple[int, int]]
    cues: list[tuple[int, int]]
    mentions: list[tuple[int, int]]

    def clause(self, position: int) -> tuple[int, int]:
        return next(c for c in self.clauses if c[0] <= position < c[1])

    @cached_property
    def served(self) -> list[tuple[int, int]]:
        """Post-cues that apply to a mention before them ("effusion is not seen")."""
        return [cue for kind in POST_KINDS for cue in self.spans[kind] if any(
            self.clause(cue[0])[0] <= a and b <= cue[0] and _words(self.text[b:cue[0]]) <= POST_WINDOW
            and not _inside(b, cue[0], self.cues) for a, b in self.mentions)]


def _classify(s: _Sentence, start: int, end: int) -> float:
    clause = s.clause(start)

    def reaching(kind: str) -> list[tuple[int, int]]:
        window = UNCERTAIN_WINDOW if kind == "uncertain_pre" else NEGATION_WINDOW
        return [(a, b) for a, b in s.spans[kind]
                if clause[0] <= a and b <= end and _words(s.text[b:start]) <= window]

    def borrowed(cue: tuple[int, int]) -> bool:
        # part of an earlier mention's post-cue and a comma away ("effusion is not seen, small pneumothorax"),
        # not one that also heads this mention ("tortuous aorta, cannot exclude aortic aneurysm")
        return "," in s.text[cue[1]:start] and any(a < cue[1] and cue[0] < b for a, b in s.served)

    def listed(cue: tuple[int, int]) -> bool:  # a list head over a comma and a mention ("no pneumothorax, effusion")
        return "," in s.text[cue[1]:start] and _inside(cue[1], start, s.mentions)

    pre = {kind: [cue for cue in reaching(kind) if not borrowed(cue)] for kind in PRE_KINDS}
    # A post-cue reaches back only to the nearest mentions: never past another cue, and past another mention
    # only to a bare list item ("atelectasis or effusion cannot be excluded"), not to one with a cue of its
    # own ("no pneumothorax, effusion cannot be excluded").
    stops = s.cues + s.mentions if any(not listed(cue) for found in pre.values() for cue in found) else s.cues

    def after(kind: str) -> bool:
        return any(a >= end and b <= clause[1] and _words(s.text[end:a]) <= POST_WINDOW
                   and not _inside(end, a, stops) for a, b in s.spans[kind])

    post = {kind: after(kind) for kind in POST_KINDS}

    def before(kind: str) -> bool:  # a mention's own post-cue beats a list head's pre-cue
        return any(not listed(cue) or not any(post.values()) for cue in pre[kind])

    if before("hypothetical_pre") or post["hypothetical_post"]:
        return NAN
    if before("uncertain_negated") or post["uncertain_negated"]:
        return UNCERTAIN
    if before("negation_pre") or post["negation_post"]:
        return NEGATIVE
    if before("uncertain_pre") or post["uncertain_post"]:
        return UNCERTAIN
    return POSITIVE


def label_sentence(sentence: str) -> dict[str, float]:
    """Findings mentioned in one sentence -> 1 / 0 / -1 (hypothetical mentions only: absent)."""
    text = sentence.lower()
    breaks = [0] + [m.start() for m in _TERMINATOR_RE.finditer(text)] + [len(text)]
    spans = _cue_spans(text)
    mentions = {name: [m.span() for m in regex.finditer(text)] for name, regex in _MENTION_RE.items()}
    context = _Sentence(text, spans, list(zip(breaks[:-1], breaks[1:], strict=True)),
                        [span for kind, found in spans.items() if kind != "pseudo" for span in found],
                        [span for found in mentions.values() for span in found])
    out: dict[str, float] = {}
    for name, found in mentions.items():
        values = [_classify(context, a, b) for a, b in found]
        if name in _NORMAL_RE and _NORMAL_RE[name].search(text):
            values.append(NEGATIVE)
        if not np.isnan(value := combine(values)):
            out[name] = value
    return out


def label_report(text: str) -> ReportLabels:
    """Labels for one report; only findings/impression are read when the report has them."""
    sentences = [(s, label_sentence(s)) for s in split_sentences(labelled_text(text))]
    merged: dict[str, float] = {}
    for _, found in sentences:
        for name, value in found.items():
            merged[name] = combine([merged.get(name, NAN), value])
    merged = propagate_to_parents(merged)
    if sentences:
        abnormal = any(v in (POSITIVE, UNCERTAIN) for k, v in merged.items() if k not in NOT_FINDINGS)
        merged["no_finding"] = NEGATIVE if abnormal else POSITIVE
    return ReportLabels({n: merged.get(n, NAN) for n in FINDING_NAMES}, sentences)


def label_texts(texts: list[str]) -> np.ndarray:
    """Report labels as float32 [N, len(FINDING_NAMES)]: 1, 0, -1 or NaN (each distinct text labelled once)."""
    out = np.full((len(texts), len(FINDING_NAMES)), np.nan, dtype=np.float32)
    done: dict[str, np.ndarray] = {}
    for i, text in enumerate(texts):
        if text and text.strip():
            if text not in done:
                labels = label_report(text).labels
                done[text] = np.array([labels[n] for n in FINDING_NAMES], dtype=np.float32)
            out[i] = done[text]
    return out


def add_report_labels(table: RecordTable) -> RecordTable:
    """Fill label cells the source left unannotated (NaN) from the report text; provider labels win."""
    extracted = label_texts(table.texts())
    frame = table.frame.copy()
    for k, name in enumerate(FINDING_NAMES):
        column = label_column(name)
        current = frame[column].to_numpy(dtype=np.float32, na_value=np.nan) if column in frame else extracted[:, k] * np.nan
        frame[column] = np.where(np.isnan(current), extracted[:, k], current)
    return RecordTable(frame, table.root)


def agreement(table: RecordTable) -> pd.DataFrame:
    """Labeller vs the table's own labels, per annotated finding, one row per distinct report.

    Binary metrics count uncertain as positive on both sides (1 or -1 vs 0 or unmentioned); ``f1_strict``
    counts only 1 as positive; ``exact`` is 3-class agreement (unmentioned read as 0)."""
    frame = table.frame[table.frame["report"].str.strip() != ""]
    frame = frame.drop_duplicates(subset=["study_id", "report"]).reset_index(drop=True)
    predicted = label_texts(frame["report"].tolist())
    rows = []
    for k, name in enumerate(FINDING_NAMES):
        column = label_column(name)
        reference = frame[column].to_numpy(dtype=np.float32, na_value=np.nan) if column in frame else None
        if reference is None or np.isnan(reference).all():
            continue
        keep = ~np.isnan(reference)
        ref, pred = reference[keep], np.nan_to_num(predicted[keep, k], nan=NEGATIVE)
        ref_pos, pred_pos = ref != NEGATIVE, pred != NEGATIVE
        tp = float((ref_pos & pred_pos).sum())
        precision, recall = tp / max(pred_pos.sum(), 1), tp / max(ref_pos.sum(), 1)
        strict_tp = float(((ref == POSITIVE) & (pred == POSITIVE)).sum())
        rows.append({
            "finding": name, "reports": int(keep.sum()), "reference_pos": int(ref_pos.sum()),
            "labeller_pos": int(pred_pos.sum()), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "f1_strict": 2 * strict_tp / max(float((ref == POSITIVE).sum() + (pred == POSITIVE).sum()), 1.0),
            "agreement": float((ref_pos == pred_pos).mean()), "exact": float((ref == pred).mean()),
        })
    return pd.DataFrame(rows)


def agreement_markdown(results: dict[str, pd.DataFrame]) -> str:
    """docs/report_labeller.md: method, then one agreement table per reference set."""
    lines = [
        "# Report labeller: agreement with reference labels",
        "",
        "Generated by `radlab data label-agreement SOURCE:PATH ... --out docs/report_labeller.md` (do not edit",
        "by hand); here `iu_xray:$RADLAB_DATA/iu_xray_reports` (the bundled two-CSV form) and `openi:DIR`, DIR",
        "holding `ecgen-radiology/` from NLMCXR_reports.tgz (shipped in torchxrayvision's package data). The",
        "two are largely the same Indiana University studies, in two forms. The rule-based labeller",
        "(`radlab.data.labeller`) reads each report's FINDINGS and IMPRESSION, splits sentences, finds mentions",
        "of the canonical findings and classifies each by its negation and uncertainty cues. Each distinct",
        "report is compared with the labels its source ships, on the findings that source annotates.",
        "",
        "Columns: `reports` compared; `ref+` / `lab+` reports positive in the reference / by the labeller,",
        "counting uncertain (-1) as positive on both sides; `P`, `R`, `F1` on that binary reading; `F1 (1 only)`",
        "counts only certain positives; `agree` binary agreement; `exact` 3-class agreement (1 / 0 / -1, an",
        "unmentioned finding read as 0). Note: IU X-ray's `no_finding` is its MeSH tag \"normal\" (no abnormality",
        "of any kind, devices and degenerative changes included), while the labeller follows the CheXpert rule",
        "(no finding among the taxonomy's pathologies), so its precision there is low by definition.",
    ]
    for name, frame in results.items():
        lines += ["", f"## {name}", "", "| finding | reports | ref+ | lab+ | P | R | F1 | F1 (1 only) | agree | exact |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in frame.itertuples(index=False):
            lines.append(f"| {r.finding} | {r.reports} | {r.reference_pos} | {r.labeller_pos} | {r.precision:.3f} | "
                         f"{r.recall:.3f} | {r.f1:.3f} | {r.f1_strict:.3f} | {r.agreement:.3f} | {r.exact:.3f} |")
        populated = frame[frame["reference_pos"] >= 20]
        if len(populated):
            lines += ["", f"Macro F1 over findings with at least 20 reference positives "
                          f"({len(populated)} findings): {populated['f1'].mean():.3f}."]
    return "\n".join(lines) + "\n"
