"""BioViL (hi-ml ``ImageModel`` state dict + CXR-BERT-specialized folder): strict loading, hi-ml's forward
reproduced for both towers, image-only without the text folder, zero-shot end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from external_checkpoints import TEXTS, make_biovil_file, make_cxr_bert_dir
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet
from transformers import BertModel

from radlab.models import load_encoder


def _reference(state: dict[str, torch.Tensor], images01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """hi-ml's ImageModel.forward on ExpandChannels(ToTensor(image)): (img_embedding, projected_global)."""
    trunk = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10)
    trunk.load_state_dict({k[16:]: v for k, v in state.items() if k.startswith("encoder.encoder.")})
    joint = state["projector.model.0.weight"].shape[0]
    projector = nn.Sequential(nn.Conv2d(2048, joint, 1, bias=False), nn.BatchNorm2d(joint), nn.ReLU(),
                              nn.Conv2d(joint, joint, 1))
    projector.load_state_dict({k[16:]: v for k, v in state.items() if k.startswith("projector.model.")})
    trunk.eval(), projector.eval()
    x = images01.repeat_interleave(3, dim=1)
    x = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))
    patch = trunk.layer4(trunk.layer3(trunk.layer2(trunk.layer1(x))))
    return F.adaptive_avg_pool2d(patch, 1).flatten(1), projector(patch).mean(dim=(2, 3))


def _text_reference(built: dict, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """CXRBertModel.get_projected_text_embeddings: last-layer [CLS] -> dense_to_hidden -> GELU -> LayerNorm ->
    dense_to_output -> L2 normalise."""
    state = built["state"]
    bert = BertModel(built["config"], add_pooling_layer=False).eval()
    bert.load_state_dict({k[5:]: v for k, v in state.items()
                          if k.startswith("bert.") and k != "bert.embeddings.position_ids"})
    cls = bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
    w = {k.removeprefix("cls_projection_head."): v for k, v in state.items() if k.startswith("cls_projection_head.")}
    h = F.gelu(F.linear(cls, w["dense_to_hidden.weight"], w["dense_to_hidden.bias"]))
    h = F.layer_norm(h, h.shape[-1:], w["LayerNorm.weight"], w["LayerNorm.bias"], eps=1e-12)
    return F.normalize(F.linear(h, w["dense_to_output.weight"], w["dense_to_output.bias"]), dim=1)


def test_biovil_matches_hi_ml_forward(tmp_path: Path) -> None:
    path, state = make_biovil_file(tmp_path)
    encoder = load_encoder(f"biovil:{tmp_path}")
    p = encoder.preprocess
    assert (p.image_size, p.mean, p.std, p.channels, p.fit, p.resize) == (480, 0.0, 1.0, 3, "crop", 512)
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        out = encoder.image_output(p.normalise(images))
        embedding = encoder.encode_image(p.normalise(images), normalize=False)
        again = encoder.encode_image(p.normalise(images), normalize=False)
        pooled, projected = _reference(state, images)
    torch.testing.assert_close(out.pooled, pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(embedding, projected, atol=1e-5, rtol=1e-5)
    assert torch.equal(embedding, again)
    assert out.pooled.shape == (2, 2048) and out.tokens.shape == (2, 4, 2048) and out.grid == (2, 2)
    assert encoder.embed_dim == 8 and not encoder.has_text


def test_biovil_text_matches_cxr_bert_projected_embeddings(tmp_path: Path) -> None:
    make_biovil_file(tmp_path)
    _, built = make_cxr_bert_dir(tmp_path / "text")
    encoder = load_encoder(f"biovil:{tmp_path}")
    assert encoder.has_text and encoder.text_tower.max_length == 64
    tokens = encoder.text_tower.tokenize(["No acute cardiopulmonary process.", "cardiomegaly"])
    vocab = built["vocab"]
    expected = [vocab.index(t) for t in ("[CLS]", "no", "acute", "cardiopulmonary", "process", "[SEP]")]
    assert tokens["input_ids"][0, :6].tolist() == expected
    assert tokens["attention_mask"].sum(1).tolist() == [6, 3]
    with torch.no_grad():
        text = encoder.encode_text(TEXTS)
        ids = encoder.text_tower.tokenize(TEXTS)
        reference = _text_reference(built, ids["input_ids"], ids["attention_mask"])
        image = encoder.encode_image(encoder.preprocess.normalise(torch.rand(2, 1, 64, 64)))
    torch.testing.assert_close(text, reference, atol=1e-5, rtol=1e-5)
    assert text.shape == (3, 8) and image.shape == (2, 8)
    torch.testing.assert_close(text.norm(dim=1), torch.ones(3))


def test_biovil_finds_text_in_the_hub_folder_layout(tmp_path: Path) -> None:
    """The hub repository holds the image .pt beside CXR-BERT's own files, custom code included: its config's
    and tokenizer config's ``auto_map`` are never followed (AutoTokenizer would ask to run that code)."""
    folder, _ = make_cxr_bert_dir(tmp_path)
    for name in ("configuration_cxrbert.py", "modeling_cxrbert.py"):
        (folder / name).write_text('raise RuntimeError("custom code ran")\n')
    path, _ = make_biovil_file(tmp_path)
    encoder = load_encoder(f"biovil:{path}")
    assert encoder.has_text and encoder.encode_text(["cardiomegaly"]).shape == (1, 8)


def test_biovil_without_text_folder_is_image_only(tmp_path: Path) -> None:
    path, _ = make_biovil_file(tmp_path)
    encoder = load_encoder(f"biovil:{path}")
    assert not encoder.has_text and encoder.text_proj is None
    with pytest.raises(ValueError, match="no text tower"):
        encoder.encode_text(["cardiomegaly"])


def test_biovil_rejects_unexpected_or_missing_keys(tmp_path: Path) -> None:
    path, state = make_biovil_file(tmp_path)
    torch.save({**state, "classifier.fc_0.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_encoder(f"biovil:{path}")
    torch.save({k: v for k, v in state.items() if k != "projector.model.1.running_var"}, path)
    with pytest.raises(RuntimeError, match="Missing key"):
        load_encoder(f"biovil:{path}")


@pytest.mark.parametrize(("old", "new", "error", "message"), [
    ("cls_projection_head.dense_to_output.weight", "cls_projection_head.dense_out.weight", RuntimeError,
     "dense_to_output.weight"),
    ("bert.encoder.layer.1.output.dense.weight", "bert.encoder.layer.1.out.dense.weight", ValueError,
     "layer.1.out"),
    ("cls_projection_head.LayerNorm.bias", "projection_head.LayerNorm.bias", ValueError, "projection_head"),
])
def test_biovil_text_key_errors_name_the_file(tmp_path: Path, old: str, new: str, error: type,
                                              message: str) -> None:
    make_biovil_file(tmp_path)
    folder, built = make_cxr_bert_dir(tmp_path / "text")
    state = dict(built["state"])
    state[new] = state.pop(old)
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(error, match=message) as caught:
        load_encoder(f"biovil:{tmp_path}")
    assert str(folder / "pytorch_model.bin") in str(caught.value)


def test_biovil_text_needs_weights_and_the_joint_size(tmp_path: Path) -> None:
    make_biovil_file(tmp_path, joint=8)
    folder, _ = make_cxr_bert_dir(tmp_path / "text", projection_size=4)
    with pytest.raises(ValueError, match="projects to 4 dims, the image projector to 8"):
        load_encoder(f"biovil:{tmp_path}")
    shutil.rmtree(folder)
    make_cxr_bert_dir(folder)
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match=str(folder)):
        load_encoder(f"biovil:{tmp_path}")
