"""Prompt methods on a frozen ViT (clsuite/methods/prompts): the prefix attention against a hand
computation and timm's own block, L2P's key-query selection and surrogate loss, DualPrompt's task
prompts, CODA-Prompt's weighted components, their gradients and Gram-Schmidt initialisation, the
checkpoint loader (safetensors round trip, pickles refused, missing files named), and a run of each
method on smnist_smoke with a tiny random ViT that resumes with identical records."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from clsuite.core.errors import ParamsError
from clsuite.image.records import read_records
from clsuite.image.train import train_run
from clsuite.methods.prompts.pools import CODAPool, DualPromptPool, L2PPool, gram_schmidt_rows
from clsuite.methods.prompts.vit import BackboneConfig, build_vit, prefix_block

from fakes.train import Crash, crash_after

pytest.importorskip("timm")
TINY = BackboneConfig(arch="tiny", img_size=28, patch_size=7, embed_dim=16, depth=3, num_heads=2)


def test_prefix_block_is_timm_block_without_prefix_and_attention_by_hand_with_one():
    torch.manual_seed(0)
    blk = build_vit(TINY, (1, 28, 28)).blocks[0].eval()
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(prefix_block(blk, x, None), blk(x))
    pk, pv = torch.randn(2, 3, 16), torch.randn(2, 3, 16)
    got = prefix_block(blk, x, (pk, pv))
    # by hand: two heads of 8, keys/values = prefix ++ own, softmax(q k^T / sqrt(8)) v
    h = blk.norm1(x)
    q, k, v = (h @ blk.attn.qkv.weight.T + blk.attn.qkv.bias).split(16, dim=-1)
    k, v = torch.cat([pk, k], 1), torch.cat([pv, v], 1)
    heads = []
    for i in range(2):
        s = slice(8 * i, 8 * i + 8)
        w = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(8), dim=-1)
        heads.append(w @ v[..., s])
    y = x + blk.attn.proj(torch.cat(heads, -1))
    expected = y + blk.mlp(blk.norm2(y))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_l2p_selects_the_nearest_keys_and_pulls_them():
    pool = L2PPool(dim=2, size=3, length=1, top_k=2, pull=0.1)
    with torch.no_grad():
        pool.keys.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
        pool.prompts.copy_(torch.arange(6.0).view(3, 1, 2))
    q = torch.tensor([[2.0, 1.0]])  # cos: 2/sqrt5, 1/sqrt5, -2/sqrt5 -> keys 0 then 1
    out = pool(q, task=0, training=True)
    assert torch.equal(out["tokens"], torch.tensor([[[0.0, 1.0], [2.0, 3.0]]]))
    assert float(out["aux_loss"].detach()) == pytest.approx(-0.1 * (2 + 1) / math.sqrt(5))


def test_l2p_model_equals_avalanches_vit_with_prompt_on_the_same_weights():
    """Features (mean of the prompt tokens' outputs, prompts after [CLS] with [CLS]'s position, as
    Avalanche's resize_pos_embed makes them) and surrogate loss against Avalanche 0.6.0's own
    ViTWithPrompt + Prompt (its L2P), with its checkpoint_filter_fn mapping the same timm weights."""
    import warnings

    from clsuite.methods.prompts.vit import PromptedViT

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from avalanche.models.timm_vit import ViTWithPrompt, checkpoint_filter_fn

    torch.manual_seed(0)
    model = PromptedViT(build_vit(TINY, (1, 28, 28)), L2PPool(16, size=4, length=2, top_k=2, pull=0.1), 3,
                        (0.5,) * 3, (0.5,) * 3).eval()
    with torch.no_grad():
        model.vit.pos_embed.normal_()  # a position embedding that matters (timm starts it near 0)
    sizes = {"img_size": 28, "patch_size": 7, "embed_dim": 16, "depth": 3, "num_heads": 2, "mlp_ratio": 2.0,
             "num_classes": 0}
    original = ViTWithPrompt(**sizes).eval()  # Avalanche's L2P queries with the unprompted ViT's [CLS]
    original.load_state_dict(model.vit.state_dict())
    ava = ViTWithPrompt(**sizes, prompt_length=2, pool_size=4, top_k=2, prompt_pool=True, prompt_key=True,
                        head_type="prompt", embedding_key="cls").eval()
    state = checkpoint_filter_fn(model.vit.state_dict(), ava)
    state.update({"prompt.prompt": model.pool.prompts.detach(), "prompt.prompt_key": model.pool.keys.detach()})
    ava.load_state_dict(state)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        got = model.features(x)
        images = model._image(x)
        query = original.forward_head(original.forward_features(images))["pre_logits"]
        res = ava.forward_head(ava.forward_features(images, cls_features=query))
    torch.testing.assert_close(got, res["pre_logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.aux_loss, -0.1 * res["reduce_sim"], rtol=1e-5, atol=1e-6)


def test_dualprompt_trains_its_own_task_prompt_and_evaluates_with_the_nearest_key():
    pool = DualPromptPool(dim=2, n_tasks=3, g_layers=(0,), e_layers=(1,), g_length=1, e_length=1, pull=1.0)
    with torch.no_grad():
        pool.keys.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    q = torch.tensor([[0.1, 2.0], [3.0, 0.2]])
    train = pool(q, task=2, training=True)
    assert torch.equal(train["prefixes"][1][0], pool.e[[2, 2], 0, 0])  # task 2's keys prompt for both rows
    expected = (1 - F.cosine_similarity(q, pool.keys[2:3].detach().expand(2, -1))).mean()
    assert float(train["aux_loss"].detach()) == pytest.approx(float(expected))
    ev = pool(q, task=1, training=False)  # tasks 0, 1 seen: nearest keys are 1 and 0
    assert torch.equal(ev["prefixes"][1][1], pool.e[[1, 0], 0, 1]) and ev["aux_loss"] is None
    assert torch.equal(ev["prefixes"][0][0][1], pool.g[0, 0])  # the G-prompt for every row


def test_coda_prompt_is_the_cosine_weighted_sum_and_old_components_take_no_gradient():
    torch.manual_seed(0)
    pool = CODAPool(dim=4, n_tasks=2, layers=(0,), size=4, length=2)
    pool.begin_task(0)
    pool.begin_task(1)
    q = torch.randn(2, 4)
    out = pool(q, task=1, training=True)
    keys, values = out["prefixes"][0]
    for n in range(2):
        alpha = [float(F.cosine_similarity(q[n] * pool.a[0, m].detach(), pool.k[0, m].detach(), dim=0)) for m in range(4)]
        prompt = sum(a * pool.p[0, m] for m, a in enumerate(alpha))
        torch.testing.assert_close(keys[n], prompt[:1])
        torch.testing.assert_close(values[n], prompt[1:])
    (keys.sum() + values.sum()).backward()
    assert pool.p.grad[0, :2].abs().sum() == 0 and pool.p.grad[0, 2:].abs().sum() > 0  # task 0's: frozen
    assert pool.k.grad[0, :2].abs().sum() == 0 and pool.a.grad[0, 2:].abs().sum() > 0


def test_coda_new_components_are_orthonormal_to_earlier_ones_and_drawn_once():
    torch.manual_seed(0)
    x = gram_schmidt_rows(torch.zeros(5, 6), 0, 5)
    torch.testing.assert_close(x @ x.T, torch.eye(5), atol=1e-5, rtol=0)
    pool = CODAPool(dim=4, n_tasks=2, layers=(0,), size=4, length=2)
    pool.begin_task(0)
    first = pool.k.detach().clone()
    pool.begin_task(0)  # a resumed task keeps its components
    assert torch.equal(pool.k, first) and int(pool.initialised) == 1
    pool.begin_task(1)
    assert torch.equal(pool.k[0, :2], first[0, :2])
    torch.testing.assert_close(pool.k[0] @ pool.k[0].T, torch.eye(4), atol=1e-5, rtol=0)


def test_coda_refuses_more_components_than_the_vit_has_directions(params, data_roots, tmp_path):
    with pytest.raises(ValueError, match="8 prompt components cannot be orthonormal in a ViT of width 4"):
        CODAPool(dim=4, n_tasks=2, layers=(0,), size=8, length=2)
    _, prepared = data_roots
    cfg = {**PROMPT_METHODS["coda_prompt"], "pool_size": 20}  # the tiny ViT is 16 wide
    p = params.model_copy(update={"methods": {**params.methods, "coda_prompt": cfg}})
    with pytest.raises(ParamsError, match="set pool_size <= 16"):
        train_run(p, "smnist_smoke", "coda_prompt", 0, prepared, tmp_path / "runs")


def test_coda_orthogonality_penalty_by_hand_only_while_training():
    pool = CODAPool(dim=2, n_tasks=1, layers=(0,), size=2, length=2, ortho=0.5)
    with torch.no_grad():
        pool.p.copy_(torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]]]))  # rows orthonormal: 0
        pool.k.copy_(torch.tensor([[[1.0, 0.0], [1.0, 1.0]]]))  # K K^T - I = [[0, 1], [1, 1]]: 3 / 4
        pool.a.copy_(torch.tensor([[[2.0, 0.0], [0.0, 1.0]]]))  # A A^T - I = [[3, 0], [0, 0]]: 9 / 4
    q = torch.tensor([[1.0, 2.0]])
    assert float(pool(q, task=0, training=True)["aux_loss"].detach()) == pytest.approx(0.5 * (0 + 0.75 + 2.25))
    assert pool(q, task=0, training=False)["aux_loss"] is None


def test_l2p_refuses_more_selected_prompts_than_the_pool_holds():
    from pydantic import ValidationError

    from clsuite.methods.prompts.methods import L2PConfig

    with pytest.raises(ValidationError, match="top_k: 6 prompts cannot be selected from a pool of 5"):
        L2PConfig(pool_size=5, top_k=6)


def test_dualprompt_refuses_a_block_with_both_prompts():
    from pydantic import ValidationError

    from clsuite.methods.prompts.methods import DualPromptConfig

    with pytest.raises(ValidationError, match=r"blocks \[1\] are in both"):
        DualPromptConfig(g_layers=[0, 1], e_layers=[1, 2])


def test_checkpoint_loads_from_safetensors_and_refuses_pickles_and_missing_files(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = build_vit(TINY, (1, 28, 28))
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    torch.manual_seed(2)
    loaded = build_vit(TINY.model_copy(update={"checkpoint": path}), (1, 28, 28))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in source.state_dict().items())
    cfg = BackboneConfig.model_validate({**TINY.model_dump(exclude={"checkpoint_sha256"}), "checkpoint": str(path)})
    assert cfg.checkpoint_sha256 is not None and len(cfg.checkpoint_sha256) == 64
    pickled = tmp_path / "vit.pt"
    import argparse

    torch.save({"model": source.state_dict(), "args": argparse.Namespace(lr=0.1)}, pickled)  # a pickled object
    with pytest.raises(ParamsError, match="never pickled objects"):
        build_vit(TINY.model_copy(update={"checkpoint": pickled}), (1, 28, 28))
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ParamsError, match="is not a readable safetensors file"):
        build_vit(TINY.model_copy(update={"checkpoint": damaged}), (1, 28, 28))
    with pytest.raises(ValueError, match="is not a file"):
        BackboneConfig(arch="tiny", checkpoint=tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="needs the pretrained weights"):
        BackboneConfig(arch="vit_base_patch16_224")
    wrong = BackboneConfig(arch="tiny", img_size=28, patch_size=7, embed_dim=32, depth=3, num_heads=2, checkpoint=path)
    with pytest.raises(ParamsError, match="does not fit this ViT"):
        build_vit(wrong, (1, 28, 28))


# MEMO's count of what each method keeps beyond the backbone and head, by hand (float32, D = 16,
# 5 experiences): L2P 4 prompts x 2 tokens + 4 keys; DualPrompt a G-prompt (1 block, key+value,
# 2 tokens), 5 tasks x E-prompts (2 blocks, key+value, 2 tokens) and 5 keys; CODA-Prompt 3 blocks x
# 10 components x (2 tokens + key + attention vector)
EXTRA_BYTES = {"l2p": 4 * 16 * (4 * 2 + 4), "dualprompt": 4 * 16 * (1 * 2 * 2 + 5 * 2 * 2 * 2 + 5),
               "coda_prompt": 4 * 16 * 3 * 10 * (2 + 1 + 1)}

PROMPT_METHODS = {
    "l2p": {"type": "l2p", "backbone": TINY.model_dump(exclude={"checkpoint_sha256"}), "pool_size": 4, "top_k": 2,
            "length": 2},
    "dualprompt": {"type": "dualprompt", "backbone": TINY.model_dump(exclude={"checkpoint_sha256"}), "g_layers": [0],
                   "e_layers": [1, 2], "g_length": 2, "e_length": 2},
    "coda_prompt": {"type": "coda_prompt", "backbone": TINY.model_dump(exclude={"checkpoint_sha256"}),
                    "layers": [0, 1, 2], "pool_size": 10, "length": 2},
}


@pytest.mark.parametrize("method", list(PROMPT_METHODS))
def test_prompt_method_trains_only_prompts_and_head_and_resumes_with_identical_records(params, data_roots, tmp_path,
                                                                                       method):
    _, prepared = data_roots
    cfg = {k: v for k, v in PROMPT_METHODS[method].items() if k != "type"}
    p = params.model_copy(update={"methods": {**params.methods, method: {"type": method, **cfg}}})
    ref_dir = train_run(p, "smnist_smoke", method, 0, prepared, tmp_path / "ref")
    ref = read_records(ref_dir)
    assert sorted(ref["train_exp"].unique()) == [-1, 0, 1, 2, 3, 4]
    exps = pd.read_parquet(ref_dir / "experiences.parquet")
    assert exps["extra_memory_bytes"].tolist() == [EXTRA_BYTES[method]] * 5
    with pytest.raises(Crash):
        train_run(p, "smnist_smoke", method, 0, prepared, tmp_path / "cut", on_experience=crash_after(1))
    final = torch.load(ref_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    early = torch.load(tmp_path / "cut" / "smnist_smoke" / method / "seed0" / "checkpoint.pt", map_location="cpu",
                       weights_only=True)["model"]  # after experience 2 of 5
    assert all(torch.equal(early[k], v) for k, v in final.items() if k.startswith("vit."))  # the backbone is frozen
    assert not all(torch.equal(early[k], v) for k, v in final.items() if k.startswith(("pool.", "head.")))
    run_dir = train_run(p, "smnist_smoke", method, 0, prepared, tmp_path / "cut")
    assert "resuming from checkpoint after experience 2/5" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)


@pytest.mark.parametrize("method", ["coda_prompt"])
def test_prompt_method_resumes_inside_an_experience_with_identical_records(params, data_roots, tmp_path, monkeypatch,
                                                                           method):
    """Epoch-level checkpoint inside experience 3 (CODA-Prompt: its task's components must not be
    drawn again on resume)."""
    from test_epoch_resume import _crash_in, _long  # tests/image is on sys.path

    from clsuite.core.errors import ComponentError

    _, prepared = data_roots
    cfg = {k: v for k, v in PROMPT_METHODS[method].items() if k != "type"}
    p = _long(params.model_copy(update={"methods": {**params.methods, method: {"type": method, **cfg}}}),
              checkpoint_every_epochs=1)
    ref = read_records(train_run(p, "smnist_smoke", method, 0, prepared, tmp_path / "ref"))
    _crash_in(monkeypatch, exp=2, epoch=2, iteration=3)
    with pytest.raises(ComponentError, match="Crash"):
        train_run(p, "smnist_smoke", method, 0, prepared, tmp_path / "cut")
    run_dir = train_run(p, "smnist_smoke", method, 0, prepared, tmp_path / "cut")
    assert "resuming experience 3 after epoch 2/4" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)


def test_prompt_method_runs_a_task_il_stream(params, data_roots, tmp_path):
    """Task-IL (declared): the model ignores the task labels it is not fed (a plain module); the
    task-IL protocol restricts the logits to the experience's classes when metrics are computed."""
    _, prepared = data_roots
    cfg = {k: v for k, v in PROMPT_METHODS["dualprompt"].items() if k != "type"}
    bench = params.benchmark("smnist_smoke").model_copy(update={"scenario": "task_il"})
    p = params.model_copy(update={"benchmarks": {**params.benchmarks, "smnist_smoke": bench},
                                  "methods": {**params.methods, "dualprompt": {"type": "dualprompt", **cfg}}})
    recs = read_records(train_run(p, "smnist_smoke", "dualprompt", 0, prepared, tmp_path / "til"))
    assert sorted(recs["train_exp"].unique()) == [-1, 0, 1, 2, 3, 4]
    last = recs[recs["train_exp"] == 4]
    assert (last["y_pred_task"] // 2 == last["eval_exp"]).all()  # smnist_smoke: classes 2e, 2e+1 in experience e


@pytest.mark.slow  # ~15 s on 2 shared cores: building and running a 224-px ViT
def test_a_timm_named_vit_loads_a_checkpoint_with_its_classifier_and_takes_grey_28px_images(tmp_path):
    """The non-tiny path on timm's smallest ViT (vit_tiny_patch16_224, 5.7M parameters): a file
    written as timm/Hugging Face ship them (a 1000-class head included) loads, the head is
    ignored, and a grey 28-px batch is repeated to 3 channels and resized to 224 px."""
    import timm
    from safetensors.torch import save_file

    from clsuite.methods.prompts.vit import PromptedViT

    torch.manual_seed(3)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1000)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    cfg = BackboneConfig(arch="vit_tiny_patch16_224", checkpoint=path)
    vit = build_vit(cfg, (1, 28, 28))
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in vit.state_dict().items())
    model = PromptedViT(vit, L2PPool(192, size=3, length=1, top_k=1), 4, cfg.mean, cfg.std).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        out = model(x)
        rgb = F.interpolate(x.expand(-1, 3, -1, -1), size=(224, 224), mode="bilinear", align_corners=False)
        query = source.forward_head(source.forward_features((rgb - 0.5) / 0.5), pre_logits=True)
    assert out.shape == (2, 4)
    torch.testing.assert_close(model.query(model._tokens(model._image(x))), query, rtol=1e-5, atol=1e-5)
    with pytest.raises(ParamsError, match="is not a timm VisionTransformer"):
        build_vit(BackboneConfig(arch="resnet18", checkpoint=path), (1, 28, 28))
