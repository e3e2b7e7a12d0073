"""The tree library: the rules a tree follows (limits.py), the mini-tree and aggregation tree
over packed buffers (tree.py), proofs and their checking (proof.py), the result store
(store.py), the CSV reader (csv_rows.py: the rules of a row and a header; csv_reader.py: one
file; csv_job.py: a job's files), summa-proof and summa-verify (cli.py), and what every command
shares (commands.py).

It imports only the kernel (cython_ext) and the standard library: no sockets, jobs or Docker."""
