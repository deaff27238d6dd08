#!/usr/bin/env sh
# Make Fashion-MNIST available: Debian's package `dataset-fashion-mnist` puts the four IDX files
# under /usr/share/datasets/fashion-mnist. Where apt cannot be used, say so; the demo then runs on
# scikit-learn's `digits` instead. With --preset, print only the preset the demo should use.
DIR=/usr/share/datasets/fashion-mnist
have() { [ -f "$DIR/train-images-idx3-ubyte.gz" ] && [ -f "$DIR/t10k-labels-idx1-ubyte.gz" ]; }

if [ "$1" = "--preset" ]; then
  if have || [ -n "$SIMSIAM_FMNIST_DIR" ]; then echo fmnist; else echo digits; fi
  exit 0
fi
have && exit 0
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  echo "installing Fashion-MNIST from Debian (apt-get install dataset-fashion-mnist)..."
  ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1
fi
if have; then exit 0; fi
echo "Fashion-MNIST is not available: apt-get could not install dataset-fashion-mnist here." >&2
echo "Put the four IDX .gz files in a folder and set SIMSIAM_FMNIST_DIR=that/folder, or pass" >&2
echo "--data-dir to 'simsiam pretrain'. The demo now falls back to scikit-learn's digits." >&2
exit 0
