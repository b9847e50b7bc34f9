"""Our BERT equals Hugging Face BertForPreTraining on identical random weights (tiny config)."""

import pytest
import torch
import transformers

from llmos.checkpoint.hf import bert_from_hf, bert_to_hf, hf_bert_config
from llmos.checkpoint.io import load_state_dict_strict
from llmos.config import BertConfig
from llmos.models.bert import BertForPreTraining

CFG = BertConfig(
    vocab_size=99,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    intermediate_size=37,
    max_position=64,
    dropout=0.0,
    attention_dropout=0.0,
)


def _pair(seed: int = 0) -> tuple[BertForPreTraining, transformers.BertForPreTraining]:
    torch.manual_seed(seed)
    hf = transformers.BertForPreTraining(hf_bert_config(CFG)).eval()
    ours = BertForPreTraining(CFG).eval()
    load_state_dict_strict(ours, bert_from_hf(hf.state_dict()))
    return ours, hf


def _batch(padded: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, CFG.vocab_size, (3, 11), generator=g)
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    mask = torch.ones_like(ids)
    if padded:
        mask[1, 7:] = 0
        mask[2, 4:] = 0
        ids = ids.masked_fill(mask == 0, CFG.pad_token_id)
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


@pytest.mark.parametrize("padded", [False, True])
def test_pretraining_logits_match_hf(padded: bool) -> None:
    ours, hf = _pair()
    batch = _batch(padded)
    with torch.no_grad():
        ref = hf(**batch)
        out = ours(**batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out.mlm_logits[real], ref.prediction_logits[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.nsp_logits, ref.seq_relationship_logits, atol=1e-5, rtol=0)


def test_masked_positions_only_equal_full_head() -> None:
    ours, _ = _pair()
    batch = _batch(padded=True)
    positions = torch.tensor([0, 5, 12, 30])
    with torch.no_grad():
        full = ours(**batch).mlm_logits.reshape(-1, CFG.vocab_size)
        sel = ours(**batch, mlm_positions=positions).mlm_logits
    torch.testing.assert_close(sel, full[positions], atol=1e-6, rtol=0)


def test_no_mask_fast_path_equals_all_ones_mask() -> None:
    ours, _ = _pair()
    batch = _batch(padded=False)
    with torch.no_grad():
        a = ours(batch["input_ids"], batch["token_type_ids"], None).mlm_logits
        b = ours(**batch).mlm_logits
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_state_dict_round_trip_is_exact() -> None:
    ours, hf = _pair()
    back = bert_to_hf(ours.state_dict())
    ref = hf.state_dict()
    assert set(back) == set(ref) - {"bert.embeddings.position_ids"}
    for key, value in back.items():
        assert torch.equal(value, ref[key]), key


@pytest.mark.parametrize("kind", ["sequence", "token"])
@pytest.mark.parametrize("padded", [False, True])
def test_classification_heads_match_hf(kind: str, padded: bool) -> None:
    from llmos.models.bert import BertForSequenceClassification, BertForTokenClassification

    hf_cls, ours_cls = {
        "sequence": (transformers.BertForSequenceClassification, BertForSequenceClassification),
        "token": (transformers.BertForTokenClassification, BertForTokenClassification),
    }[kind]
    hf_cfg = hf_bert_config(CFG)
    hf_cfg.num_labels = 5
    torch.manual_seed(0)
    hf = hf_cls(hf_cfg).eval()
    ours = ours_cls(CFG, num_labels=5).eval()
    load_state_dict_strict(ours, bert_from_hf(hf.state_dict()))
    batch = _batch(padded)
    with torch.no_grad():
        ref = hf(**batch).logits
        out = ours(**batch)
    if kind == "token":
        real = batch["attention_mask"].bool()
        out, ref = out[real], ref[real]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    back = bert_to_hf(ours.state_dict())
    ref_sd = {k: v for k, v in hf.state_dict().items() if not k.endswith("position_ids")}
    assert back.keys() == ref_sd.keys()
    assert all(torch.equal(back[k], ref_sd[k]) for k in back)
