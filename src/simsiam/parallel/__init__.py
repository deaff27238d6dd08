"""Several processes as one run: the process group (torchrun, gloo/nccl) and a SyncBN that also runs on CPU."""
