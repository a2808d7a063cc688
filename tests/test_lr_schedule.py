"""The one learning-rate schedule: known values of every term, and the recipes that use it."""

from __future__ import annotations

import math

import pytest
import torch

from fscil_bench.toolkit.lr_schedule import learning_rate
from fscil_bench.toolkit.training import (
    OptimisationLoop,
    SGDRecipe,
    StepRecipe,
    recipe_key,
)


def test_linear_warm_up_in_both_conventions():
    # (step + 1) / W: 0.25, 0.5, 0.75, 1.0 of the peak over 4 steps, then the shape (constant here)
    assert [learning_rate(s, 10, 2.0, shape="constant", warmup=4) for s in range(5)] == [0.5, 1.0, 1.5, 2.0, 2.0]
    # from a start factor f: f + (1 - f) s / W, i.e. 0.1, 0.325, 0.55, 0.775 of the peak
    got = [learning_rate(s, 10, 1.0, shape="constant", warmup=4, warmup_start=0.1) for s in range(5)]
    assert got == pytest.approx([0.1, 0.325, 0.55, 0.775, 1.0])


def test_cosine_decays_to_its_floor_and_starts_after_the_warm_up():
    total, warm = 12, 2
    rates = [learning_rate(s, total, 1.0, warmup=warm, floor=0.1) for s in range(total)]
    assert rates[warm] == pytest.approx(1.0)  # the decay starts at the peak
    # progress p = (s - W) / (N - W): value 0.1 + 0.9 (1 + cos(pi p)) / 2
    for s in range(warm, total):
        p = (s - warm) / (total - warm)
        assert rates[s] == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * p)) / 2)
    assert all(a > b for a, b in zip(rates[warm:], rates[warm + 1:]))  # strictly decreasing
    assert learning_rate(total, total, 1.0, floor=0.1) == pytest.approx(0.1)  # the floor at the end


def test_cool_down_holds_the_last_steps_and_the_cosine_ends_before_it():
    total, cool = 20, 5
    rates = [learning_rate(s, total, 1.0, floor=0.01, cooldown=cool, cooldown_factor=0.001) for s in range(total)]
    assert rates[-cool:] == [0.001] * cool
    # the cosine spans the N - C steps before the cool-down: its last step is one step short of the floor
    p = (total - cool - 1) / (total - cool)
    assert rates[total - cool - 1] == pytest.approx(0.01 + 0.99 * (1 + math.cos(math.pi * p)) / 2)


def test_step_schedule_counts_milestones_in_units():
    rates = [learning_rate(s, 100, 1.0, shape="step", milestones=(5, 8), gamma=0.1, units=10)
             for s in (0, 49, 50, 79, 80, 99)]
    assert rates == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert learning_rate(7, 10, 1.0, shape="step", milestones=(3, 7), gamma=0.5) == pytest.approx(0.25)  # in steps


def test_unknown_shape_is_an_error():
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        learning_rate(0, 10, 1.0, shape="linear")


def test_recipes_speak_in_their_own_units():
    sgd = SGDRecipe(epochs=4, lr=1.0, warmup_epochs=1, schedule="step", milestones=(2,), gamma=0.5)
    assert [sgd.lr_at(s, 5) for s in (0, 4, 5, 9, 10)] == pytest.approx([0.2, 1.0, 1.0, 1.0, 0.5])
    steps = StepRecipe(steps=10, lr=0.5, warmup_steps=2, warmup_start=0.2, cooldown_steps=2, cooldown_factor=0.1)
    assert steps.lr_at(0) == pytest.approx(0.1) and steps.lr_at(9) == pytest.approx(0.05)


def test_a_recipe_field_added_later_keeps_the_cache_keys_of_recipes_that_leave_it_alone():
    plain = SGDRecipe(epochs=4, lr=0.05)
    assert set(recipe_key(plain)) == {"epochs", "lr", "batch_size", "momentum", "weight_decay", "warmup_epochs",
                                      "schedule", "milestones", "gamma"}
    assert recipe_key(SGDRecipe(epochs=4, lr=0.05, nesterov=True))["nesterov"] is True


def test_the_loop_sets_each_steps_rate_and_averages_the_loss_per_epoch():
    weight = torch.nn.Parameter(torch.tensor(1.0))
    seen = []
    loop = OptimisationLoop(torch.optim.SGD([weight], lr=0.0), lambda s: 0.1 * (s + 1), torch.device("cpu"))
    for _ in range(3):
        loop.set_lr()
        seen.append(loop.optimizer.param_groups[0]["lr"])
        loop.step((weight - 3.0) ** 2, samples=2)
    assert seen == pytest.approx([0.1, 0.2, 0.3])
    # gradient 2 (w - 3): w goes 1 -> 1.4 -> 2.04 -> 2.616; losses 4, 2.56, 0.9216
    assert float(weight.detach()) == pytest.approx(2.616)
    assert loop.end_epoch() == pytest.approx((4 + 2.56 + 0.9216) / 3)
    assert loop.end_epoch() == 0.0 and loop.steps_done == 3


# --- mmcv's convention: the values NC-FSCIL's logs print (NeuralCollapseApplications/FSCIL@37a5475 logs/) ---

def _nc_cifar(i: int) -> float:
    return learning_rate(i, 11750, 0.25, convention="mmcv", warmup=100, warmup_start=0.1, floor=0.01, cooldown=10,
                         cooldown_factor=0.001)


def printed(rate: float) -> str:
    """A rate as mmcv's text logger prints it (three decimals in scientific notation)."""
    return f"{rate:.3e}"


def test_mmcv_cosine_with_cool_down_gives_nc_fscils_cifar_base_rates():
    assert printed(_nc_cifar(9)) == "4.525e-02"
    assert printed(_nc_cifar(109)) == "2.499e-01"
    # the warm-up multiplies the cosine: 0.1 + 0.009 i of reg(i)
    reg = 0.0025 + 0.12375 * (1 + math.cos(math.pi * 50 / 11740))
    assert _nc_cifar(50) == pytest.approx(reg * (0.1 + 0.009 * 50), rel=1e-12)
    # the cosine reaches its floor exactly at i = T - C, then 9 cool-down iterations at 0.1%
    assert _nc_cifar(11740) == pytest.approx(2.5e-3, rel=1e-12)
    assert [_nc_cifar(i) for i in range(11741, 11750)] == pytest.approx([2.5e-4] * 9)


def test_mmcv_step_by_epoch_gives_nc_fscils_mini_base_rates():
    recipe = SGDRecipe(epochs=500, repeat=10, lr=0.25, batch_size=512, schedule="step", convention="mmcv",
                       milestones=(200, 300, 350, 400, 450), gamma=0.25, warmup_steps=3000, warmup_start=0.25)
    assert printed(recipe.lr_at(9, 586)) == "6.306e-02"  # 0.25 (0.25 + 0.00025 i)
    assert recipe.lr_at(3000, 586) == pytest.approx(0.25)
    # x0.25 once a runner epoch (10 passes, 586 iterations) reaches 20, 30, 35, 40, 45
    assert recipe.lr_at(20 * 586 - 1, 586) == pytest.approx(0.25)
    assert recipe.lr_at(20 * 586, 586) == pytest.approx(0.0625)
    assert recipe.lr_at(50 * 586 - 1, 586) == pytest.approx(2.44140625e-4)


def test_cub_base_rates_with_a_floor_of_ten_percent():
    recipe = SGDRecipe(epochs=80, repeat=4, lr=0.025, batch_size=512, convention="mmcv", warmup_steps=100,
                       warmup_start=0.1, min_lr=0.1, cooldown_steps=10, cooldown_factor=0.01)
    assert printed(recipe.lr_at(105, 24)) == "2.234e-02"
    assert recipe.lr_at(479, 24) == pytest.approx(2.5e-4)
    assert recipe.lr_at(470, 24) == pytest.approx(2.5e-3)


@pytest.mark.parametrize("lr,steps,first", [(0.25, 50, 0.069916), (0.025, 100, 0.0069981), (0.05, 105, 0.0139966)])
def test_nc_fscils_incremental_counter_starts_at_one(lr, steps, first):
    recipe = StepRecipe(steps=steps, lr=lr, convention="mmcv", first_step=1, warmup_steps=5, warmup_start=0.1,
                        min_lr=0.01, cooldown_steps=5, cooldown_factor=0.001)
    assert recipe.lr_at(0) == pytest.approx(first, rel=1e-4)  # the logs' first step: 0.28 of the cosine
    cosine = [lr * (0.01 + 0.495 * (1 + math.cos(math.pi * k / (steps - 5)))) for k in range(1, 5)]
    assert [recipe.lr_at(j) for j in range(4)] == pytest.approx([c * f for c, f in zip(cosine, (0.28, 0.46, 0.64, 0.82))])
    assert recipe.lr_at(4) == pytest.approx(lr * (0.01 + 0.495 * (1 + math.cos(math.pi * 5 / (steps - 5)))))
    assert [recipe.lr_at(j) for j in range(steps - 5, steps)] == pytest.approx([lr * 0.001] * 5)
    assert recipe.lr_at(steps - 6) == pytest.approx(lr * 0.01)  # the floor, just before the cool-down


def test_a_step_list_overrides_the_recipes_own_length():
    recipe = StepRecipe(steps=10, lr=1.0, convention="mmcv", first_step=1, cooldown_steps=5, cooldown_factor=0.5)
    assert recipe.lr_at(19, 20) == pytest.approx(0.5) and recipe.lr_at(9) == pytest.approx(0.5)
    assert recipe.lr_at(9, 20) < 1.0 and recipe.lr_at(9, 20) != 0.5


def test_unknown_convention_and_bad_repeat_are_errors():
    with pytest.raises(ValueError, match="unknown learning-rate convention"):
        learning_rate(0, 10, 1.0, convention="keras")
    with pytest.raises(ValueError, match="multiple of repeat"):
        SGDRecipe(epochs=10, lr=0.1, repeat=4)
    with pytest.raises(ValueError, match="unknown checkpoint rule"):
        SGDRecipe(epochs=10, lr=0.1, checkpoint="best")
