#!/bin/bash
# The runs behind benchmarks/README.md, on one GPU machine, from the repo root:
#
#   bash benchmarks/run_gpu.sh STAGE OUTDIR
#
# STAGE: env (versions and the GPU), smoke (a quick pass over both models),
# mnist (the PyTorch peer and mnist_dcgan in float32 and bfloat16 at batch 64,
# 256, 1024), sngan (the PyTorch SNGAN peer, eager and compiled, and
# cifar10_sngan at batch 64 in both dtypes) or extra (the ablations behind the
# README's proposals). The PyTorch DCGAN peer must be at .peers/torch_dcgan.py
# (a copy of ../shared/peers/torch_dcgan.py); the SNGAN peer is in the repo,
# benchmarks/peers/torch_sngan.py (a peer for benchmarking, not part of
# gan_jax; its images_per_s is batch x iterations/s like train_step.py's).
set -u
stage=$1
out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
bench() { python3 benchmarks/train_step.py "$@"; }

case $stage in
  env)
    nvidia-smi
    python3 -c 'import jax; jax.print_environment_info()'
    python3 -c 'import jax, jaxlib, flax, optax; print("jax", jax.__version__, "jaxlib", jaxlib.__version__, "flax", flax.__version__, "optax", optax.__version__); print(jax.devices(), jax.devices()[0].client.platform_version)'
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), torch.cuda.get_device_name())'
    ;;
  smoke)
    bench --config configs/mnist_dcgan.py --batch_sizes=64 --iterations=20 \
        --repeats=1 --out="$out/smoke_mnist.json"
    bench --config configs/cifar10_sngan.py --config.dtype=bfloat16 \
        --batch_sizes=64 --iterations=10 --repeats=1 --nocheck_dtypes \
        --out="$out/smoke_sngan.json"
    python3 .peers/torch_dcgan.py eager 64 20
    python3 benchmarks/peers/torch_sngan.py eager 64 5 2
    ;;
  mnist)
    python3 .peers/torch_dcgan.py eager,compile 64,256,1024 300 \
        | tee "$out/peer_torch_dcgan.jsonl"
    bench --config configs/mnist_dcgan.py --batch_sizes=64,256,1024 \
        --out="$out/mnist_dcgan_float32.json"
    bench --config configs/mnist_dcgan.py --config.dtype=bfloat16 \
        --batch_sizes=64,256,1024 --out="$out/mnist_dcgan_bfloat16.json"
    ;;
  sngan)
    python3 benchmarks/peers/torch_sngan.py eager,compile 64 200 \
        | tee "$out/peer_torch_sngan.jsonl"
    bench --config configs/cifar10_sngan.py --batch_sizes=64 \
        --out="$out/cifar10_sngan_float32.json"
    bench --config configs/cifar10_sngan.py --config.dtype=bfloat16 \
        --batch_sizes=64 --out="$out/cifar10_sngan_bfloat16.json"
    ;;
  extra)
    # The state replicated by flax (a second compilation), then onto a mesh
    # named step.AXIS (train.py's way, the default), then more steps per call;
    # each against the default run in the same command.
    bench --config configs/mnist_dcgan.py --config.dtype=bfloat16 \
        --batch_sizes=64,1024 --nocheck_dtypes --replicate=flax \
        --out="$out/extra_flax_replicate.json"
    bench --config configs/mnist_dcgan.py --config.dtype=bfloat16 \
        --batch_sizes=64,1024 --nocheck_dtypes --out="$out/extra_baseline.json"
    bench --config configs/mnist_dcgan.py --config.dtype=bfloat16 \
        --batch_sizes=64 --nocheck_dtypes --config.steps_per_call=50 \
        --out="$out/extra_steps_per_call_50.json"
    ;;
  *)
    echo "unknown stage $stage" >&2; exit 2;;
esac
