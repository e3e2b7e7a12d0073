"""Write a large random entry CSV for the benchmarks.

    python bench/gen_csv.py OUT.csv --entries N --currencies C [--seed S] [--max-balance-bits B]

Header ``username,balance_ETH_ETH,balance_USDT_ETH,...``; every username is 10 characters from
[A-Za-z0-9]: random characters followed by the row number in base 62, so names are unique
without a set. Balances are uniform below 2^B (default 40). Same seed, same file.
Importable: ``generate(path, entries, currencies=1, seed=1, bits=40)``.
"""
import argparse
import random
import sys
import time
from itertools import islice, product, repeat

from summa_aggregation.cython_ext._kernel import MAX_CURRENCIES

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
NAME_LENGTH = 10
_CURRENCIES = ["ETH_ETH", "USDT_ETH", "USDC_ETH", "BTC_BTC", "DAI_ETH", "LINK_ETH", "UNI_ETH",
               "SOL_SOL", "TRX_TRX", "USDT_TRX", "BNB_BSC", "USDT_BSC", "MATIC_POLYGON",
               "USDC_POLYGON", "AVAX_AVAX", "DOT_DOT"]
_CHUNK = 1 << 16  # rows per write
# random byte -> alphabet character (62 does not divide 256: a slight bias, harmless here)
_TO_ALPHABET = bytes(ord(ALPHABET[b % len(ALPHABET)]) for b in range(256))


def column_names(currencies):
    """Balance column names: 16 familiar ones, then balance_C16_ETH, balance_C17_ETH, ..."""
    if not 1 <= currencies <= MAX_CURRENCIES:
        raise ValueError(f"currencies must be from 1 to {MAX_CURRENCIES}, got {currencies}")
    return ["balance_" + (_CURRENCIES[i] if i < len(_CURRENCIES) else f"C{i}_ETH")
            for i in range(currencies)]


def _code_width(rows):
    width = 4
    while len(ALPHABET) ** width < rows:
        width += 1
    if width >= NAME_LENGTH:
        raise ValueError(f"too many rows for {NAME_LENGTH}-character usernames")
    return width


def generate(path, entries, currencies=1, seed=1, bits=40, start=0):
    """Write ``entries`` random rows to ``path``; ``start`` offsets the row numbers (for files
    of one job that must not share usernames). Returns the header as a list."""
    if entries < 1:
        raise ValueError("entries must be at least 1")
    if bits < 1:
        raise ValueError("max balance bits must be at least 1")
    header = ["username"] + column_names(currencies)
    rng = random.Random(seed)
    width = _code_width(start + entries)
    free = NAME_LENGTH - width
    codes = map("".join, islice(product(ALPHABET, repeat=width), start, start + entries))
    getrandbits = rng.getrandbits
    with open(path, "w", newline="") as out:
        out.write(",".join(header) + "\n")
        done = 0
        while done < entries:
            n = min(_CHUNK, entries - done)
            chars = rng.randbytes(free * n).translate(_TO_ALPHABET).decode("ascii")
            names = [chars[i:i + free] + code
                     for i, code in zip(range(0, free * n, free), islice(codes, n))]
            columns = [list(map(str, map(getrandbits, repeat(bits, n)))) for _ in range(currencies)]
            out.write("\n".join(map(",".join, zip(names, *columns))))
            out.write("\n")
            done += n
    return header


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write a random entry CSV for benchmarks.")
    parser.add_argument("out", metavar="OUT.csv")
    parser.add_argument("--entries", type=int, required=True)
    parser.add_argument("--currencies", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-balance-bits", type=int, default=40, metavar="B",
                        help="balances are below 2^B (default 40)")
    parser.add_argument("--start", type=int, default=0,
                        help="first row number (files of one job need disjoint ranges)")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    try:
        generate(args.out, args.entries, args.currencies, args.seed, args.max_balance_bits, args.start)
    except ValueError as error:
        parser.error(str(error))
    print(f"wrote {args.out}: {args.entries} entries x {args.currencies} currencies "
          f"in {time.perf_counter() - began:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
