"""The table of Avalanche's methods that clsuite names ``avalanche.<name>``, and their registration.

Each entry: the wrapped plugin (:mod:`.plugins`), a config written per plugin (strict, unknown
keys fail), the scenarios it supports, its citation and a builder. The configs are written by
hand rather than generated from the plugins' ``__init__`` signatures: Avalanche annotates few
parameters (``lambda_e``, ``alpha`` are untyped, ``mem_size`` has no bound), mixes
hyperparameters with objects (``storage_policy``, ``model``, ``device``) and spells the same
setting differently per plugin, so a generated config would accept nonsense that only fails
in the middle of training. A new entry in :data:`ZOO` is registered and picked up by
tests/image/test_avalanche_zoo.py automatically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from pydantic import Field, model_validator

from clsuite.methods import MethodConfig, MethodContext, register_method
import clsuite.methods.avalanche.plugins as P
from clsuite.methods.avalanche.ar1 import AR1, wrap_ar1
from clsuite.methods.avalanche.bic import BiC, wrap_bic
from clsuite.methods.avalanche.cope import CoPE, wrap_cope
from clsuite.methods.avalanche.er_aml import ERAML
from clsuite.methods.avalanche.generative_replay import GenerativeReplay
from clsuite.methods.avalanche.mer import MER
from clsuite.methods.avalanche.packnet import packnet_plugin, wrap_packnet
from clsuite.methods.avalanche.pnn import PNN, wrap_pnn
from clsuite.methods.avalanche.scr import SCR, wrap_scr
from clsuite.methods.avalanche.slda import StreamingLDA, wrap_slda

ALL = ("class_il", "task_il", "domain_il")


@dataclass(frozen=True)
class ZooEntry:
    """One wrapped method: ``avalanche.<name>``."""

    name: str
    config: type[MethodConfig]
    build: Callable[[MethodConfig, MethodContext], object]  # -> the plugin
    description: str
    citation: str
    scenarios: tuple[str, ...] = ALL
    memory: str = ""  # what extra_memory_bytes counts (docs/methods.md)
    wrap_model: Callable[[torch.nn.Module, MethodConfig, MethodContext], torch.nn.Module] | None = None


class AGEMConfig(MethodConfig):
    patterns_per_exp: int = Field(256, ge=1, description="exemplars kept per experience")
    sample_size: int = Field(256, ge=1, description="memory samples per reference gradient")


class GEMConfig(MethodConfig):
    patterns_per_exp: int = Field(256, ge=1, description="exemplars kept per experience")
    memory_strength: float = Field(0.5, ge=0, description="offset of the QP constraint (gamma)")


class EWCConfig(MethodConfig):
    ewc_lambda: float = Field(10.0, ge=0, description="penalty weight")
    mode: Literal["separate", "online"] = "separate"
    decay_factor: float | None = Field(None, ge=0, le=1, description="online mode: Fisher decay")
    keep_importance_data: bool = False

    @model_validator(mode="after")
    def _online_needs_decay(self) -> "EWCConfig":
        if self.mode == "online" and self.decay_factor is None:
            raise ValueError("mode 'online' needs decay_factor in [0, 1] (e.g. 1.0)")
        return self


class SIConfig(MethodConfig):
    si_lambda: float = Field(0.1, ge=0, description="penalty weight (c in the paper)")
    eps: float = Field(1e-7, gt=0, description="damping (xi in the paper)")


class MASConfig(MethodConfig):
    lambda_reg: float = Field(1.0, ge=0, description="penalty weight")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the previous importance in its update")


class RWalkConfig(MethodConfig):
    ewc_lambda: float = Field(0.1, ge=0, description="penalty weight")
    ewc_alpha: float = Field(0.9, ge=0, le=1, description="moving-average factor of the Fisher (EWC++)")
    delta_t: int = Field(10, ge=1, description="iterations between score updates")


class LwFConfig(MethodConfig):
    alpha: float = Field(1.0, ge=0, description="weight of the distillation term")
    temperature: float = Field(2.0, gt=0, description="softmax temperature")


class LFLConfig(MethodConfig):
    lambda_e: float = Field(1.0, ge=0, description="weight of the feature (Euclidean) loss")


class FeatureDistillationConfig(MethodConfig):
    alpha: float = Field(1.0, ge=0, description="weight of the feature distillation term")
    mode: Literal["cosine", "mse"] = "cosine"


class FromScratchConfig(MethodConfig):
    reset_optimizer: bool = Field(True, description="also reset the optimizer state before each experience")


class GDumbConfig(MethodConfig):
    mem_size: int = Field(200, ge=1, description="class-balanced buffer capacity")


class ReplayConfig(MethodConfig):
    mem_size: int = Field(200, ge=1, description="experience-balanced buffer capacity")
    batch_size: int | None = Field(None, ge=1, description="current-data samples per step (None: train batch size)")
    batch_size_mem: int | None = Field(None, ge=1, description="buffer samples per step (None: batch_size)")
    task_balanced_dataloader: bool = False


class MIRConfig(MethodConfig):
    mem_size: int = Field(200, ge=1, description="class-balanced buffer capacity")
    subsample: int = Field(50, ge=1, description="candidates scored per step")
    batch_size_mem: int = Field(10, ge=1, description="most interfered samples replayed per step")


class RARConfig(MethodConfig):
    mem_size: int = Field(200, ge=1, description="reservoir buffer capacity")
    batch_size_mem: int = Field(10, ge=1, description="buffer samples per step")
    opt_lr: float = Field(0.1, gt=0)
    use_adversarial_replay: bool = True
    beta_coef: float = Field(0.4, ge=0, description="weight of the buffer loss")
    decay_factor_fgsm: float = Field(1.0, ge=0)
    epsilon_fgsm: float = Field(0.0314, ge=0)
    iter_fgsm: int = Field(2, ge=1)


class GSSConfig(MethodConfig):
    mem_size: int = Field(200, ge=1, description="buffer capacity")
    mem_strength: int = Field(5, ge=1, description="memory gradients compared per sample")


class CWRStarConfig(MethodConfig):
    cwr_layer_name: str | None = Field(None, description="the consolidated layer (None: the last linear layer)")
    freeze_remaining_model: bool = Field(True, description="train only that layer after the first experience")


class BiCConfig(MethodConfig):
    mem_size: int = Field(200, ge=1, description="experience-balanced buffer capacity (also sizes the validation split)")
    batch_size: int | None = Field(None, ge=1, description="current-data samples per step (None: train batch size)")
    batch_size_mem: int | None = Field(None, ge=1, description="buffer samples per step (None: train batch size)")
    val_percentage: float = Field(0.1, gt=0, lt=1, description="validation split: this fraction of mem_size, "
                                  "held out of the training data, split evenly over the classes seen")
    T: float = Field(2.0, gt=0, description="distillation temperature")
    stage_2_epochs: int = Field(200, ge=1, description="epochs of bias-layer training after each experience")
    lamb: float | None = Field(None, ge=0, description="weight of the distillation term added to the loss "
                               "(None: the loss is (1 - l) CE + l KD with l = old classes / seen classes)")
    lr: float = Field(0.1, gt=0, description="learning rate of the bias-layer training")

    @model_validator(mode="after")
    def _validation_split_not_empty(self) -> "BiCConfig":
        if int(self.val_percentage * self.mem_size) < 1:
            raise ValueError(f"val_percentage * mem_size = {self.val_percentage * self.mem_size:g} keeps no "
                             "validation sample for the bias layer; raise mem_size or val_percentage")
        return self


class ERAMLConfig(MethodConfig):
    mem_size: int = Field(200, ge=1, description="class-balanced buffer capacity (filled before each experience)")
    batch_size_mem: int = Field(10, ge=1, description="buffer samples per step")
    temp: float = Field(0.1, gt=0, description="supervised-contrastive temperature")
    base_temp: float = Field(0.07, gt=0, description="supervised-contrastive base temperature")
    same_task_neg: bool = Field(True, description="negatives only from the anchor's task")


class SCRConfig(MethodConfig):
    mem_size: int = Field(200, ge=1, description="class-balanced buffer capacity (also the NCM class means' source)")
    batch_size_mem: int = Field(100, ge=1, description="buffer samples per step")
    temperature: float = Field(0.1, gt=0, description="supervised-contrastive temperature")
    proj_dim: int = Field(128, ge=1, description="width of the projection head's output")


class MERConfig(MethodConfig):
    mem_size: int = Field(200, ge=1, description="reservoir buffer capacity")
    batch_size_mem: int = Field(10, ge=1, description="buffer samples added to each inner batch")
    n_inner_steps: int = Field(5, ge=1, description="inner batches per minibatch (each: one step per sample)")
    beta: float = Field(0.1, gt=0, le=1, description="within-batch Reptile rate")
    gamma: float = Field(0.1, gt=0, le=1, description="across-batch Reptile rate")


class CoPEConfig(MethodConfig):
    mem_size: int = Field(200, ge=1, description="class-balanced buffer capacity (as many buffer rows as new rows per step)")
    p_size: int = Field(100, ge=1, description="width of the L2-normalised embedding and of each class prototype")
    alpha: float = Field(0.99, ge=0, le=1, description="momentum of the prototype update (per training step)")
    T: float = Field(0.1, gt=0, description="PPP-loss temperature (also scales the eval scores cos / T)")


class AR1Config(MethodConfig):
    latent_layer: int = Field(3, ge=1, description="index in the model's backbone (an nn.Sequential) where latent replay "
                              "enters; the layers below run in eval mode and are frozen after the first experience "
                              "(mlp [Flatten, Linear, ReLU, Linear, ReLU]: 3 = after the first hidden layer)")
    rm_sz: int = Field(1500, ge=1, description="latent replay memory: activations at latent_layer")
    inc_lr: float | None = Field(None, gt=0, description="lr from the second experience on (Avalanche: 5e-5 after "
                                 "0.001; None: keep the benchmark's lr)")
    ewc_lambda: float = Field(0.0, ge=0, description="SI penalty below the head (0: no SI, Avalanche's default)")


class StreamingLDAConfig(MethodConfig):
    shrinkage_param: float = Field(1e-4, ge=0, le=1, description="covariance shrinkage towards the identity")
    streaming_update_sigma: bool = Field(True, description="update the shared covariance with every row")


class GenerativeReplayConfig(MethodConfig):
    latent_dim: int = Field(2, ge=1, description="VAE latent size (Avalanche's GenerativeReplay default)")
    encoder_units: list[int] = Field(default_factory=lambda: [400, 128], min_length=1,
                                     description="VAE encoder widths (the last feeds the mean/log-variance heads)")
    decoder_units: list[int] = Field(default_factory=lambda: [64, 128, 256], min_length=1,
                                     description="VAE decoder hidden widths (then the input size)")
    vae_epochs: int | None = Field(None, ge=1, description="VAE epochs per experience (None: the solver's)")
    vae_batch_size: int | None = Field(None, ge=2, description="VAE minibatch (None: the solver's train batch size)")
    vae_lr: float = Field(0.01, gt=0, description="VAE Adam learning rate")
    vae_weight_decay: float = Field(1e-4, ge=0, description="VAE Adam weight decay")
    replay_size: int | None = Field(None, ge=1, description="generated rows per minibatch (None: as many as the "
                                    "minibatch's, for the solver and the VAE)")
    increasing_replay_size: bool = Field(False, description="replay_size None: minibatch size x experience index")

    @model_validator(mode="after")
    def _positive_units(self) -> "GenerativeReplayConfig":
        if min(self.encoder_units + self.decoder_units) < 1:
            raise ValueError("encoder_units and decoder_units take positive widths")
        return self


class PackNetConfig(MethodConfig):
    post_prune_epochs: int = Field(1, ge=0, description="epochs of fine-tuning after pruning, at the end of each "
                                   "experience (below the experience's epochs: set the method's train.epochs)")
    prune_proportion: float | list[float] = Field(0.5, description="fraction of the free weights pruned after "
                                                  "each experience's training (or one value per experience)")

    @model_validator(mode="after")
    def _proportions_in_unit_interval(self) -> "PackNetConfig":
        values = self.prune_proportion if isinstance(self.prune_proportion, list) else [self.prune_proportion]
        if not values or any(not 0 <= v <= 1 for v in values):
            raise ValueError(f"prune_proportion must be in [0, 1] (or a non-empty list of such), got {self.prune_proportion}")
        return self


class PNNConfig(MethodConfig):
    adapter: Literal["mlp", "linear"] = Field("mlp", description="lateral adapter: mlp (U relu(V cat(alpha_j h_j)), "
                                              "the paper's) or linear (one Linear per earlier column)")


ZOO: tuple[ZooEntry, ...] = (
    ZooEntry("agem", AGEMConfig, lambda c, x: P.AGEM(c.patterns_per_exp, c.sample_size, x.seed),
             "averaged gradient episodic memory (gradient projection)", "chaudhry2019agem", memory="exemplars"),
    ZooEntry("gem", GEMConfig, lambda c, x: P.GEM(c.patterns_per_exp, c.memory_strength),
             "gradient episodic memory (QP gradient projection)", "lopezpaz2017gem", memory="exemplars"),
    ZooEntry("ewc", EWCConfig, lambda c, x: P.EWC(c.ewc_lambda, c.mode, c.decay_factor, c.keep_importance_data),
             "Avalanche's EWC plugin as is", "kirkpatrick2017ewc", memory="parameters x k"),
    ZooEntry("si", SIConfig, lambda c, x: P.SI(c.si_lambda, c.eps),
             "synaptic intelligence (path-integral importance penalty)", "zenke2017si", memory="parameters x 2"),
    ZooEntry("mas", MASConfig, lambda c, x: P.MAS(c.lambda_reg, c.alpha),
             "memory aware synapses (output-sensitivity importance penalty)", "aljundi2018mas",
             memory="parameters x 2"),
    ZooEntry("rwalk", RWalkConfig, lambda c, x: P.RWalk(c.ewc_lambda, c.ewc_alpha, c.delta_t),
             "Riemannian walk (EWC++ and path-integral scores)", "chaudhry2018riemannian", memory="parameters x 4"),
    ZooEntry("lwf", LwFConfig, lambda c, x: P.LwF(c.alpha, c.temperature),
             "Avalanche's learning without forgetting plugin", "li2017lwf", memory="model copy"),
    ZooEntry("lfl", LFLConfig, lambda c, x: P.LFL(c.lambda_e),
             "less-forgetful learning (feature distance to the old model, frozen head)", "jung2016lfl",
             scenarios=("domain_il",), memory="model copy"),
    ZooEntry("feature_distillation", FeatureDistillationConfig, lambda c, x: P.FeatureDistillation(c.alpha, c.mode),
             "distillation of the old model's penultimate features", "hou2019ucir", memory="model copy"),
    ZooEntry("from_scratch", FromScratchConfig, lambda c, x: P.FromScratch(c.reset_optimizer),
             "retrain from the initial weights at every experience (reference)", "lomonaco2021avalanche",
             memory="parameters x 1"),
    ZooEntry("gdumb", GDumbConfig, lambda c, x: P.GDumb(c.mem_size),
             "greedy class-balanced sampler, model retrained from scratch on the buffer", "prabhu2020gdumb",
             memory="exemplars"),
    ZooEntry("replay", ReplayConfig,
             lambda c, x: P.Replay(c.mem_size, c.batch_size, c.batch_size_mem, c.task_balanced_dataloader),
             "Avalanche's replay (experience-balanced buffer, end-of-experience update)", "chaudhry2019er",
             memory="exemplars"),
    ZooEntry("mir", MIRConfig, lambda c, x: P.MIR(c.batch_size_mem, c.mem_size, c.subsample),
             "maximally interfered retrieval", "aljundi2019mir", memory="exemplars"),
    ZooEntry("rar", RARConfig,
             lambda c, x: P.RAR(c.batch_size_mem, c.mem_size, c.opt_lr, None, c.use_adversarial_replay, c.beta_coef,
                                c.decay_factor_fgsm, c.epsilon_fgsm, c.iter_fgsm),
             "repeated augmented rehearsal (adversarially perturbed replay)", "zhang2022rar", memory="exemplars"),
    ZooEntry("gss_greedy", GSSConfig, lambda c, x: P.GSSGreedy(c.mem_size, c.mem_strength, list(x.input_shape)),
             "gradient-based sample selection (greedy)", "aljundi2019gss", memory="exemplars"),
    ZooEntry("cwr_star", CWRStarConfig, lambda c, x: P.CWRStar(c.cwr_layer_name, c.freeze_remaining_model),
             "CWR*: per-class consolidated head rows", "maltoni2019cwr", memory="head rows"),
    ZooEntry("bic", BiCConfig,
             lambda c, x: BiC(c.mem_size, c.batch_size, c.batch_size_mem, False, None, c.val_percentage, c.T,
                              c.stage_2_epochs, -1 if c.lamb is None else c.lamb, c.lr, 0),
             "bias correction: replay + distillation, a bias layer on the newest classes trained on a held-out split",
             "wu2019bic", scenarios=("class_il",), memory="exemplars + model copy", wrap_model=wrap_bic),
    ZooEntry("er_aml", ERAMLConfig, lambda c, x: ERAML(c.mem_size, c.batch_size_mem, c.temp, c.base_temp, c.same_task_neg),
             "experience replay with asymmetric metric learning (supervised-contrastive loss on new data)",
             "caccia2022aml", memory="exemplars"),
    ZooEntry("scr", SCRConfig, lambda c, x: SCR(c.mem_size, c.batch_size_mem, c.temperature),
             "supervised contrastive replay: contrastive loss on a projection head, nearest-class-mean prediction",
             "mai2021scr", memory="exemplars + class means", wrap_model=wrap_scr),
    ZooEntry("mer", MERConfig, lambda c, x: MER(c.mem_size, c.batch_size_mem, c.n_inner_steps, c.beta, c.gamma),
             "meta-experience replay: per-sample steps on current + buffer rows, Reptile within and across batches",
             "riemer2019mer", memory="exemplars"),
    ZooEntry("streaming_lda", StreamingLDAConfig, lambda c, x: StreamingLDA(c.streaming_update_sigma),
             "deep streaming LDA: class means and a shared covariance of the (frozen) network's features, no SGD",
             "hayes2020slda", memory="class means + covariance", wrap_model=wrap_slda),
    ZooEntry("cope", CoPEConfig, lambda c, x: CoPE(c.mem_size, c.alpha, c.T, x.seed),
             "continual prototype evolution: PPP loss on an L2-normalised embedding, momentum prototypes updated "
             "every step, class-balanced replay, nearest-prototype prediction",
             "delange2021cope", memory="exemplars + prototypes", wrap_model=wrap_cope),
    ZooEntry("ar1", AR1Config, lambda c, x: _ar1_plugins(c, x),
             "AR1: CWR* on a bias-free head, latent replay of activations at a declared layer (layers below frozen "
             "after the first experience), optionally SI", "pellegrini2020latent", scenarios=("class_il", "domain_il"),
             memory="latent activations + head rows", wrap_model=wrap_ar1),
    ZooEntry("generative_replay", GenerativeReplayConfig,
             lambda c, x: GenerativeReplay(x.input_shape, c.latent_dim, c.encoder_units, c.decoder_units, c.vae_epochs,
                                           c.vae_batch_size, c.vae_lr, c.vae_weight_decay, c.replay_size,
                                           c.increasing_replay_size),
             "deep generative replay: a VAE trained after each experience (on it + its own samples) generates "
             "inputs that the previous model labels, replayed with each minibatch", "shin2017dgr",
             memory="generator + model copy"),
    ZooEntry("packnet", PackNetConfig,
             lambda c, x: packnet_plugin(c.post_prune_epochs, c.prune_proportion, x.experiences),
             "PackNet: per task, train, prune the smallest free weights, fine-tune, freeze; each task evaluated "
             "with its own mask (task-IL)", "mallya2018packnet", scenarios=("task_il",), memory="masks",
             wrap_model=wrap_packnet),
    ZooEntry("pnn", PNNConfig, lambda c, x: PNN(),
             "progressive neural networks: one MLP column per task with lateral adapters, old columns frozen "
             "(task-IL)", "rusu2016pnn", scenarios=("task_il",), memory="extra columns", wrap_model=wrap_pnn),
)


def _ar1_plugins(c: AR1Config, x: MethodContext):
    """AR1's plugin, and Avalanche's SI on the network below the head when ``ewc_lambda`` > 0 (as its AR1)."""
    ar1 = AR1(c.rm_sz, c.inc_lr, x.seed)
    return [ar1, P.SI(c.ewc_lambda, excluded_parameters=["net.head"])] if c.ewc_lambda > 0 else ar1


def _register(entry: ZooEntry) -> None:
    def build(cfg: MethodConfig, ctx: MethodContext) -> list:
        plugins = entry.build(cfg, ctx)
        return list(plugins) if isinstance(plugins, list) else [plugins]

    register_method(f"avalanche.{entry.name}", entry.config, entry.description, citation=entry.citation,
                    scenarios=entry.scenarios, wrap_model=entry.wrap_model)(build)


for _entry in ZOO:
    _register(_entry)
