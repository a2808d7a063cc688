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
