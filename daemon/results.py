"""Finishing a job's result: the unit roots joined by the upper tree (mini-tree roots, then
the aggregation tree, SPEC section 3), the range check on the root, and the result directory
published atomically under DATA_DIR/results/JOB (mst/store_writer.py)."""
from ..cython_ext import _kernel
from ..mst.store_v1 import StoreError
from ..mst.tree import Levels, RangeCheckError, check_range, zero_root
from .job import FAILED, JobEnded


def upper_tree(shape, roots, n_currencies, layout):
    """The tree over every unit slot: real units' roots, the zero subtree elsewhere."""
    upper = Levels.allocate(shape.upper_depth, n_currencies)
    record = upper.record_size
    zero = zero_root(shape.unit_depth, n_currencies, layout)
    upper.nodes[:record << shape.upper_depth] = zero * (1 << shape.upper_depth)
    for slot, serial in shape.unit_slots():
        upper.nodes[record * slot:record * (slot + 1)] = roots[serial]
    try:
        upper.hash_up(layout)
    except _kernel.BalanceOverflow:
        raise RangeCheckError("a balance total does not fit in the field") from None
    return upper


def write_result(job, shape, roots, writer, currencies, before_saving=lambda: None):
    """The root node JSON; JobEnded when the totals overflow or the disk refuses."""
    spec = job.spec
    try:
        upper = upper_tree(shape, roots, len(currencies), spec.layout)
        check_range(upper.root, spec.n_bytes, currencies)
    except RangeCheckError as error:
        raise JobEnded(FAILED, str(error)) from None
    before_saving()
    manifest = {
        "layout": spec.layout, "n_currencies": len(currencies), "currencies": currencies,
        "n_bytes": spec.n_bytes, "mini_depth": shape.mini_depth, "top_depth": shape.top_depth,
        "unit_depth": shape.unit_depth, "mini_count": len(shape.counts),
        "entry_counts": shape.counts, "entries": shape.entries, "root": upper.root.to_json(),
        "job": job.id, "inputs": list(spec.csvs), "batch_size": spec.batch_size,
        # SPEC section 7: the variants, read back by summa-proof (and stated in every proof)
        "username_encoding": spec.username_encoding, "is_sorted": spec.sorted,
        "csv_format": "v1" if currencies and currencies[0] == "currency_0" else "v1.1",
    }
    try:
        writer.finish(shape, upper, manifest, before_publish=job.commit)
    except (OSError, StoreError) as error:   # a full or failing disk: nothing half-written stays
        raise JobEnded(FAILED, f"cannot write the result to {writer.target}: "
                       f"{getattr(error, 'strerror', None) or error}") from None
    return upper.root.to_json()
