# Only the compiled extension lives here; every other piece of metadata is in setup.cfg.
from Cython.Build import cythonize
from setuptools import Extension, setup

kernel = Extension(
    "summa_aggregation.cython_ext._kernel",
    sources=["cython_ext/_kernel.pyx"],
    depends=["cython_ext/poseidon_kernel.h", "cython_ext/poseidon_rounds.h",
             "cython_ext/mul_adx.h", "cython_ext/ifma.h"],
    include_dirs=["cython_ext"],
    extra_compile_args=["-O3", "-fno-strict-aliasing"],
)

# packed records: narrowing, widening, fingerprints, radix sort and search (no hashing)
records = Extension(
    "summa_aggregation.cython_ext._records",
    sources=["cython_ext/_records.pyx"],
    extra_compile_args=["-O3", "-fno-strict-aliasing"],
)

# the entry CSV reader's fast path: lines to packed entries (no I/O)
csvscan = Extension(
    "summa_aggregation.cython_ext._csvscan",
    sources=["cython_ext/_csvscan.pyx"],
    depends=["cython_ext/keccak.h", "cython_ext/keccak_avx512.h"],
    include_dirs=["cython_ext"],
    extra_compile_args=["-O3", "-fno-strict-aliasing"],
)

# sorting entries by username: in-memory runs and their k-way merge (no I/O)
sort = Extension(
    "summa_aggregation.cython_ext._sort",
    sources=["cython_ext/_sort.pyx"],
    extra_compile_args=["-O3", "-fno-strict-aliasing"],
)

setup(ext_modules=cythonize([kernel, records, csvscan, sort], language_level=3))
