"""Loaders for encoders trained elsewhere, registered in ``ENCODERS`` as ``FORMAT -> loader(path)``:
RAD-DINO / Hugging Face vision models, BiomedCLIP / open_clip folders, CheXzero, BioViL, GLoRIA, MedCLIP and
torchxrayvision models (one module per format).

Every loader reads local files (a hub id is passed on to the owning library where noted, for users with
internet) and never unpickles code: safetensors or ``torch.load(..., weights_only=True)``.
"""

from radlab.registry import import_submodules

import_submodules(__name__)
