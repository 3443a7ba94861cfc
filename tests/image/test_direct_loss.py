"""Which before/after_forward callbacks let ClsuiteTemplate build the loss in one call: those whose
defining class declares them in ``loss_untouched_in`` (a subclass that overrides one must declare
it again; an instance attribute never counts)."""

from __future__ import annotations

from avalanche.training.plugins import SupervisedPlugin

from clsuite.image.guard import DivergenceGuard
from clsuite.image.trainer import _leaves_loss_alone
from clsuite.methods.replay import ReservoirReplayPlugin, ReservoirReplaySAMPlugin


class Declared(SupervisedPlugin):
    loss_untouched_in = ("before_forward",)

    def before_forward(self, strategy, **kwargs):
        pass

    def after_forward(self, strategy, **kwargs):  # not declared
        pass


class Inherits(Declared):
    pass


class Overrides(Declared):
    def before_forward(self, strategy, **kwargs):  # may touch strategy.loss: must declare again
        strategy.loss += 1


def test_only_declared_callbacks_of_the_defining_class_leave_the_loss_alone():
    assert _leaves_loss_alone(Declared().before_forward)
    assert not _leaves_loss_alone(Declared().after_forward)
    assert _leaves_loss_alone(Inherits().before_forward)  # Declared's own callback
    assert not _leaves_loss_alone(Overrides().before_forward)
    patched = Declared()
    patched.before_forward = lambda strategy, **kwargs: None  # an instance attribute: unknown
    assert not _leaves_loss_alone(patched.before_forward)
    assert not _leaves_loss_alone(lambda strategy, **kwargs: None)


def test_er_and_the_guard_declare_theirs():
    assert _leaves_loss_alone(ReservoirReplayPlugin(10, 2, seed=0).before_forward)
    assert _leaves_loss_alone(DivergenceGuard("b/m/seed0", "b", "m", n_classes=10).after_forward)
    # ER-SAM keeps ER's batch concatenation (its SAM step is in before_update)
    assert _leaves_loss_alone(ReservoirReplaySAMPlugin(10, 2, seed=0, rho=0.05).before_forward)
