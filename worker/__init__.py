"""The mini-tree server (server.py) and its command, summa-worker (cli.py), a BUILD's checks
(build_request.py) and a client of one worker (client.py).

It never imports the daemon: a worker runs alone, in a container or on another host."""
