"""LogitStats.all_reduce_ across two gloo processes equals a single-process pass."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import torch
from tuned_lens.stats import LogitStats

_WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch.distributed as dist
    from tuned_lens.stats import LogitStats

    rank, init_file, out_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    logits = np.random.default_rng(0).standard_normal((50, 40)).astype(np.float32) * 3
    shards = {0: logits[:20], 1: logits[20:]}

    split = LogitStats()
    split.update(shards[rank])
    split.all_reduce_()

    lopsided = LogitStats()  # rank 1 saw no rows at all
    if rank == 0:
        lopsided.update(logits)
    lopsided.all_reduce_()

    with open(out_file, "w") as f:
        json.dump({"split": split.to_dict(), "lopsided": lopsided.to_dict()}, f)
    # Both ranks leave together: on torch 2.4 a rank whose peer had already torn down the
    # file store hung in destroy_process_group (1 run in 3 here; 0 in 10 with the barrier).
    dist.barrier()
    dist.destroy_process_group()
    """
)


def test_all_reduce_with_two_gloo_ranks_equals_one_pass(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    init_file = tmp_path / "rendezvous"
    outputs = [tmp_path / f"rank{rank}.json" for rank in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), str(init_file), str(outputs[rank])],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    for worker in workers:
        log, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0, log

    single = LogitStats()
    single.update(np.random.default_rng(0).standard_normal((50, 40)).astype(np.float32) * 3)
    for output in outputs:
        results = json.loads(output.read_text())
        for case in ("split", "lopsided"):
            reduced = LogitStats.from_dict(results[case])
            assert reduced.n == single.n == 50
            torch.testing.assert_close(reduced.sum_probs, single.sum_probs, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(
                reduced.sum_log_probs, single.sum_log_probs, rtol=1e-12, atol=1e-12
            )


def test_all_reduce_without_a_process_group_is_a_no_op():
    stats = LogitStats()
    stats.update(np.zeros((3, 4), dtype=np.float32))
    stats.all_reduce_()
    assert stats.n == 3
    torch.testing.assert_close(stats.marginal_probs, torch.full((4,), 0.25, dtype=torch.float64))
