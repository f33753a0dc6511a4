"""Concurrent single calls share ONNX runs, results go back to the right caller, overload is shed."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from triage_model.micro_batching import BatcherClosed, BatcherOverloaded, MicroBatcher, length_groups
from triage_model.predictor import TriagePredictor


class SlowEcho:
    """A predictor stand-in that records batch sizes and echoes each text back as its "result"."""

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def predict(self, texts, batch_size=32):
        with self.lock:
            self.batches.append(len(texts))
        time.sleep(self.delay)
        return [f"result:{t}" for t in texts]


def test_concurrent_calls_are_batched_and_each_gets_its_own_results():
    fake = SlowEcho()

    async def main():
        batcher = MicroBatcher(lambda: fake, max_batch=32)
        calls = [batcher.predict([f"t{i}"]) for i in range(40)]
        results = await asyncio.gather(*calls)
        await batcher.close()
        return results, batcher.stats

    results, stats = asyncio.run(main())
    assert results == [[f"result:t{i}"] for i in range(40)]
    assert len(fake.batches) < 40 / 4, f"40 concurrent calls should share a few runs, got {fake.batches}"
    assert max(fake.batches) <= 32 and stats.texts == 40


class Overlap(SlowEcho):
    """SlowEcho that also records how many runs were inside ``predict`` at the same moment."""

    def __init__(self, delay: float = 0.1) -> None:
        super().__init__(delay)
        self.inside = self.most_inside = 0

    def predict(self, texts, batch_size=32):
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            return super().predict(texts, batch_size)
        finally:
            with self.lock:
                self.inside -= 1


@pytest.mark.parametrize("runs", [1, 2])
def test_concurrent_runs_overlap_up_to_the_limit_and_results_stay_with_their_caller(runs):
    """Calls arriving in three waves while runs compute: one slot never overlaps runs, two slots overlap two."""
    fake = Overlap()

    async def main():
        batcher = MicroBatcher(lambda: fake, max_batch=4, concurrent_runs=runs)
        calls = []
        for wave in range(3):
            calls += [asyncio.ensure_future(batcher.predict([f"w{wave}-{i}"])) for i in range(6)]
            await asyncio.sleep(0.02)
        results = await asyncio.gather(*calls)
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert results == [[f"result:w{w}-{i}"] for w in range(3) for i in range(6)]
    assert fake.most_inside == runs
    assert max(fake.batches) <= 4 and sum(fake.batches) == 18


def test_a_callable_run_limit_is_read_before_every_run():
    """The served model decides the runs (``serving.run_plan``); a hot reload may change them mid-stream."""
    fake = Overlap()
    limit = {"runs": 1}

    async def wave(batcher, name):
        return await asyncio.gather(*(batcher.predict([f"{name}-{i}"]) for i in range(8)))

    async def main():
        batcher = MicroBatcher(lambda: fake, max_batch=2, concurrent_runs=lambda: limit["runs"])
        first = await wave(batcher, "a")
        one_run_peak, fake.most_inside = fake.most_inside, 0
        limit["runs"] = 2  # e.g. the student was loaded
        second = await wave(batcher, "b")
        await batcher.close()
        return first + second, one_run_peak

    results, one_run_peak = asyncio.run(main())
    assert results == [[f"result:{w}-{i}"] for w in "ab" for i in range(8)]
    assert one_run_peak == 1 and fake.most_inside == 2


def test_a_lone_call_runs_at_once_without_waiting_for_companions():
    fake = SlowEcho(delay=0.0)

    async def main():
        batcher = MicroBatcher(lambda: fake)
        start = time.perf_counter()
        await batcher.predict(["单独一条"])
        elapsed = time.perf_counter() - start
        await batcher.close()
        return elapsed

    assert asyncio.run(main()) < 0.05


def test_more_waiting_texts_than_the_queue_holds_are_shed():
    fake = SlowEcho(delay=0.2)

    async def main():
        batcher = MicroBatcher(lambda: fake, max_batch=4, max_queue=8)
        first = asyncio.ensure_future(batcher.predict(["a", "b", "c", "d"]))
        await asyncio.sleep(0.01)  # the first batch is running; the queue fills behind it
        waiting = [asyncio.ensure_future(batcher.predict([f"w{i}"])) for i in range(8)]
        await asyncio.sleep(0)
        with pytest.raises(BatcherOverloaded):
            await batcher.predict(["one too many"])
        await asyncio.gather(first, *waiting)
        await batcher.close()

    asyncio.run(main())


def test_a_failing_batch_fails_its_callers_and_the_batcher_keeps_serving():
    class Flaky(SlowEcho):
        def predict(self, texts, batch_size=32):
            if "boom" in texts:
                raise RuntimeError("onnx failed")
            return super().predict(texts, batch_size)

    fake = Flaky(delay=0.0)

    async def main():
        batcher = MicroBatcher(lambda: fake)
        with pytest.raises(RuntimeError, match="onnx failed"):
            await batcher.predict(["boom"])
        ok = await batcher.predict(["fine"])
        await batcher.close()
        return ok

    assert asyncio.run(main()) == ["result:fine"]


def test_batched_predictions_equal_one_by_one_predictions_of_the_real_model(served_model_dir):
    predictor = TriagePredictor.from_pretrained(served_model_dir)
    texts = ["快递三天没到", "银行卡被盗刷两千元，我要报警", "请问会员怎么退订？", "客服态度太差了"]

    async def main():
        batcher = MicroBatcher(lambda: predictor)
        got = await asyncio.gather(*(batcher.predict([t]) for t in texts))
        await batcher.close()
        return [g[0] for g in got]

    batched = asyncio.run(main())
    for text, result in zip(texts, batched, strict=True):
        alone = predictor.predict([text])[0]
        assert (result.category.label, result.severity.label, result.sentiment.label) == (
            alone.category.label,
            alone.severity.label,
            alone.sentiment.label,
        )
        assert result.category.score == pytest.approx(alone.category.score, abs=2e-3)


def test_length_groups_keep_similar_lengths_together_in_input_order_coverage():
    lengths = [20, 400, 60, 22, 200, 61, 100, 21, 350, 59]
    groups = length_groups(lengths, cap=128, max_group=32)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    by_len = [sorted(min(lengths[i], 128) for i in g) for g in groups]
    assert by_len == [[20, 21, 22], [59, 60, 61], [100, 128, 128, 128]]  # over the cap all cost the same
    assert all(len(g) <= 2 for g in length_groups(lengths, cap=128, max_group=2))
    assert length_groups([], cap=128, max_group=32) == []


def test_a_batch_reaches_the_model_as_length_groups_and_results_come_back_in_order():
    fake = SlowEcho(delay=0.0)
    texts = ["短" * 20, "长" * 300, "短" * 21, "中" * 60, "长" * 400]

    async def main():
        batcher = MicroBatcher(lambda: fake)
        got = await asyncio.gather(*(batcher.predict([t]) for t in texts))
        await batcher.close()
        return [g[0] for g in got]

    assert asyncio.run(main()) == [f"result:{t}" for t in texts]
    assert sorted(fake.batches) == [1, 2, 2]  # 20+21 chars, 60, 300+400 (both over the 128 cap)


@pytest.mark.parametrize("runs", [1, 2])
def test_closing_fails_the_calls_in_a_run_and_in_the_queue_instead_of_leaving_them_hanging(runs):
    fake = SlowEcho(delay=0.3)

    async def main():
        batcher = MicroBatcher(lambda: fake, max_batch=1, concurrent_runs=runs)
        calls = [asyncio.ensure_future(batcher.predict([f"t{i}"])) for i in range(4)]
        await asyncio.sleep(0.05)  # the first run(s) started, the rest queue
        await batcher.close()
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 2)

    outcomes = asyncio.run(main())
    assert all(isinstance(o, BatcherClosed) for o in outcomes), outcomes
