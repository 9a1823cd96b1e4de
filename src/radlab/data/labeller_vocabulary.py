"""The words of the report labeller (``radlab.data.labeller``): how each canonical finding is mentioned, the
phrases that state a finding normal, the phrases inside which a mention names nothing, the phrases that suggest
a finding without naming it, the negation / uncertainty / hypothetical cues, clause breaks, and how far the cues
reach. Patterns are regular expressions over lower-cased text."""

from __future__ import annotations

_N = r"(?:\w+ ){0,2}"  # up to two filler words
NOT_PREFIXED = r"(?<!non)(?<!non-)(?<!un)"  # "noncalcified", "non-enlarged", "uncalcified" mention nothing
MENTIONS: dict[str, tuple[str, ...]] = {
    "enlarged_cardiomediastinum": (
        r"widen\w* (?:of )?(?:the )?(?:superior )?mediastin\w*", r"(?:enlarged|widened) (?:cardio)?mediastin\w*",
        r"mediastin\w*(?: \w+){0,3} (?:widen\w*|enlarged|enlargement)",
        r"cardiomediastinal (?:silhouette|contours?)(?: \w+){0,2} (?:enlarged|widened|prominent)"),
    "cardiomegaly": (
        r"cardiomegaly", r"cardiac (?:enlargement|hypertrophy)", r"(?:enlarged|large|prominent) (?:heart|cardiac)",
        r"enlargement of the (?:heart|cardiac)", r"(?:heart|cardiac) enlargement", r"borderline (?:heart|cardiac) size",
        r"(?:heart|cardiac silhouette|cardiac shadow|cardiac size|heart size)(?: \w+){0,3} (?:enlarged|increased|large)\b"),
    "aortic_enlargement": (
        r"(?:tortuous|ectatic|enlarged|dilated|unfolded|elongated|uncoiled),? " + _N + r"(?:and \w+ )?aort\w*",
        r"aort\w*(?: \w+){0,3} (?:tortuous|tortuosity|ectatic|ectasia|enlarged|enlargement|dilated|dilatation|"
        r"unfolded|unfolding|elongated|elongation|aneurysm\w*)",
        r"(?:tortuosity|unfolding|ectasia|enlargement|dilatation)(?: and (?:\w+ )?\w+)? of the " + _N + r"aorta",
        r"(?:tortuosity|unfolding|ectasia|dilatation) " + _N + r"aorta"),
    "lung_opacity": (r"opaci\w*", r"densit(?:y|ies)", r"air ?space (?:disease|opacit\w*|process)", r"\bhazy\b"),
    "lung_lesion": (r"(?:lung|pulmonary|parenchymal|cavitary|focal|spiculated) lesions?", r"neoplasm\w*",
                    r"tumou?rs?\b", r"carcinoma", r"malignan\w*", r"metasta\w*", r"\bcancer"),
    "nodule": (rf"(?<!{NOT_PREFIXED}calcified )(?<!granulomatous )nodul(?:e|es|ar|arity)\b",),
    "mass": (r"\bmass(?:es|-like)?\b",),
    "lung_cavity": (r"cavit(?:y|ies|ary|ation)",),
    "lung_cyst": (r"(?:lung|pulmonary|parenchymal) cysts?",),
    "edema": (r"(?<!soft tissue )\bo?edema", r"(?:pulmonary|vascular|venous|interstitial) congestion",
              r"congestive heart failure", r"\bchf\b", r"cephalization",
              # signs of pulmonary venous congestion (IU X-ray's Pulmonary Congestion, mapped to edema)
              r"vascular (?:prominence|redistribution)", r"(?:prominent|increased) (?:\w+ ){0,2}vascularity",
              r"pulmonary venous hypertension", r"indistinct (?:\w+ ){0,2}vascul\w*", r"\bengorged\b"),
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
        r"\bhardware\b", r"(?<!cholecystectomy )\bclips?\b", r"\bleads\b", r"generator", r"\bdevices?\b", r"\bpicc\b",
        r"stimulator", r"\bcoils\b", r"\banchors?\b",
        # a tip in a central vein or the right atrium is a line's, whatever its name ("right chest XXXX tip at SVC")
        r"\btip\b(?: \w+){0,5} (?:svc|superior vena cava|cavoatrial|caval|right atri\w*|innominate|brachiocephalic)"),
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
# Phrases inside which a finding's mention names nothing: calcification of the aorta, other vessels or heart valves
# is vascular, not the taxonomy's calcified granuloma or focus (PadChest's aortic atheromatosis and IU X-ray's
# Atherosclerosis/aorta are not mapped to it either; CheXpert has no such label).
_VESSEL = (r"(?:aort(?!o-?pulmonary)\w*|atherosclero\w*|atheromat\w*|vascular|vessels?|arter(?:y|ies|ial)|coronary|"
           r"mitral|valv\w*|annul\w*)")
EXCLUDED: dict[str, tuple[str, ...]] = {
    "lung_cavity": (r"(?:thoracic|pleural|chest|abdominal|peritoneal|pericardial) cavit\w*",),  # anatomical spaces
    "calcification": (_VESSEL + r"(?: (?!and\b|or\b|nor\b)\w+){0,3} calci\w*",
                      r"calci\w*(?: (?!and\b|or\b|nor\b|granulom|nod|lymph|mass)\w+){0,3} " + _VESSEL),
}
# Phrases that suggest a finding without naming it: positive they give -1 (negated, 0), as the IU X-ray experts'
# tags Costophrenic Angle/blunted and Mediastinum/prominent are read (``iu_xray.UNCERTAIN_MAP``).
_ANGLE = r"(?:costophrenic|costodiaphragmatic|sulc(?:us|i)|recess(?:es)?|pleural spaces?)"
SUGGESTIVE: dict[str, tuple[str, ...]] = {
    "pleural_effusion": (r"blunt\w*(?: \w+){0,4} " + _ANGLE, _ANGLE + r"(?: \w+){0,3} blunt\w*"),
    "enlarged_cardiomediastinum": (r"prominen\w* (?:of )?(?:the )?(?:superior )?mediastin\w*",
                                   r"(?<!cardio)mediastin\w*(?: \w+){0,3} prominen\w*"),
}
UNCERTAIN_NEGATED = (r"can ?not (?:be )?(?:entirely |completely |definitely )?(?:excluded|exclude|ruled out|rule out)",
                     r"not (?:be )?(?:entirely |completely |definitely )?(?:excluded|ruled out)",
                     r"difficult to (?:completely |entirely )?exclude", r"could not exclude")
HYPOTHETICAL_PRE = (r"evaluat\w* for", r"evaluat\w* of (?!the |this |these |that |those )", r"rule[- ]?out",
                    r"\b(?:to|and) exclude", r"\bif\b")  # "if there is concern for fracture, consider rib series"
HYPOTHETICAL_POST = (r"may not be (?:demonstrated|detected|seen|visible)",)
_MODIFIERS = r"(?:(?:significant|interval|appreciable) ){0,2}"
PSEUDO_NEGATION = (rf"no {_MODIFIERS}(?:change|increase|decrease|worsening)\b", rf"without {_MODIFIERS}change",
                   r"not (?:significantly )?(?:changed|increased)", r"not only", r"no longer (?:require|need)",
                   r"not (?:seen|present|visualized|identified) (?:on|in) (?:the )?(?:prior|previous)",
                   # seen on the other view: "opacity on the frontal view, not well seen on the lateral view"
                   r"not (?:well[- ])?(?:seen|visualized|identified|evident) (?:on|in) (?:the )?"
                   r"(?:lateral|frontal|pa|ap)\b")
NEGATION_PRE = (r"\bno\b", r"\bnot\b", r"\bwithout\b", r"free of", r"negative for", r"absence of", r"\babsent\b",
                r"resolution of", r"resolved", r"clear of", r"rather than", r"\bnor\b", r"\bneither\b",
                r"removal of", r"\bunlikely\b", r"less likely")
NEGATION_POST = (r"(?:is|are|was|were|has|have been)? ?(?:not (?:well[- ])?seen|not identified|not present|"
                 r"not (?:well[- ])?visualized|absent)",
                 r"(?:is|are|was|were) (?:unlikely|less likely|not likely)",
                 r"(?:has|have)? ?(?:resolved|cleared|been removed|removed)", r"no longer (?:seen|visible|present|evident)",
                 r"is gone")
UNCERTAIN_PRE = (r"possib\w*", r"\bmay(?:be)?\b", r"\bmight\b", r"\bcould\b", r"suggest\w*", r"suspicio\w*",
                 r"suspect\w*", r"question(?:able)?(?: of)?", r"concern(?:ing)? for", r"\blikely\b", r"probabl[ey]",
                 r"presum\w*", r"\bversus\b", r"\bvs\b", r"differential", r"borderline", r"equivocal", r"indeterminate",
                 r"consider(?!ing\b)\w*",  # not "considering technical factors"
                 r"cannot be distinguished", r"\bvague\w*", r"\bpotential\w*", r"\bunclear\b", r"\bwhether\b")
UNCERTAIN_POST = (r"(?:is|are) (?:not )?(?:entirely |also )?(?:excluded|possible|suspected|questioned|likely)",
                  r"cannot be excluded", r"\?", r"(?:is|are) in the differential")
TERMINATORS = (r"\bbut\b", r"\bhowever\b", r"\balthough\b", r"\bthough\b", r"\bexcept\b", r"aside from",
               r"apart from", r"\bwhereas\b", r"\bwhich\b", r"\botherwise\b", r";", r"\bwith the exception\b",
               r"(?<!\bif )\bthere (?:is|are)\b", r"\band (?:the|there|a|an)\b")
# Words a cue reaches: negation-like pre-cues over lists ("no consolidation, effusion or pneumothorax"); hedges
# UNCERTAIN_WINDOW, and up to NEGATION_WINDOW over a list of alternatives ("may represent a focal area of
# consolidation or atelectasis"); post-cues back POST_WINDOW, a plural one ("have cleared", "are not seen") up to
# NEGATION_WINDOW over the subject it agrees with ("consolidation, atelectasis, and blunting ... have cleared").
NEGATION_WINDOW, UNCERTAIN_WINDOW, POST_WINDOW = 12, 6, 6
LIST_ITEM_WORDS = 3  # words before a mention in its own list item, for a hedge reaching past UNCERTAIN_WINDOW
PLURAL_POST = r"(?:are|were|have)\b"  # a post-cue that agrees with a plural or coordinated subject
LIST_SEPARATOR = r",|\bor\b|\band\b|\bversus\b|\bvs\b|/"
