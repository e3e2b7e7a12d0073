"""Writing a job's result: the checked mini-trees joined by the aggregation tree, and the
result directory saved atomically under DATA_DIR/results/JOB (mst/store.py)."""
import os

from ..mst import store
from ..mst.tree import AggregationMerkleSumTree, Levels, MerkleSumTree, RangeCheckError
from .job import FAILED, JobEnded


def write_result(job, batches, depth, nodes, results_dir, before_saving=lambda: None):
    """The root node JSON; JobEnded when the totals overflow or the disk refuses."""
    spec = job.spec
    n = len(batches[0].currencies)
    minis = [MerkleSumTree(Levels(buffer, depth, n), bytes(b.usernames), b.count, spec.layout,
                           b.currencies) for b, buffer in zip(batches, nodes)]
    try:
        tree = AggregationMerkleSumTree(minis, spec.layout, spec.n_bytes)
    except RangeCheckError as error:
        raise JobEnded(FAILED, str(error)) from None
    before_saving()
    target = os.path.join(results_dir, job.id)
    try:
        store.save(tree, target, spec.n_bytes, {"job": job.id, "inputs": list(spec.csvs)})
    except OSError as error:   # a full or failing disk: nothing half-written stays behind
        raise JobEnded(FAILED, f"cannot write the result to {target}: "
                       f"{error.strerror or error}") from None
    return tree.root.to_json()
