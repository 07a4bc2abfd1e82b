"""The runtime audit hook: ``hook`` (files, processes, sockets, exec) and ``initiator`` (did user
code or a library start this import/exec?)."""
