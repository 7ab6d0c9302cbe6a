"""LE labelling: the packed single pass against one prompt per (prefix, candidate), and against a plain
causal forward over the same number of tokens, in one run, with the same LM and users.

    python benchmarks/bench_le.py [--lm DIR|tiny] [--users 16] [--items 64] [--candidates 10]
                                  [--naive-users 2] [--threads 2] [--dtype float32]

- packed: 16 users x 64 items, 10 candidates per prefix, appended in the same pass (candidates go in
  chunks of --chunk prefixes per pass, as the labeller does, so no pass grows too long);
- naive: one forward per prefix and per (prefix, candidate) prompt, the method the single pass replaces;
  it is timed on --naive-users users and scaled to all users (it is linear in users: every prompt is
  its own forward) — the scaling is printed;
- plain: the LM's ordinary causal forward over rows of the same total number of tokens.

Targets (issue: the LE): packed >= 50x faster than naive; packed tokens/s >= 90% of plain tokens/s.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from learec.env.lm import load_causal_lm, tiny_llama
from learec.env.packed import decoder_of, packed_forward, separate_forward


def timed(fn, repeats: int = 1) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lm", default=None, help="LM directory or 'tiny' (default: the fetched SmolLM2-135M)")
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=16, help="prefixes whose candidates share one pass")
    ap.add_argument("--naive-users", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.lm == "tiny":
        model, _ = tiny_llama(hidden=64, layers=2, vocab_size=104)
    else:
        model, _ = load_causal_lm(args.lm, dtype=args.dtype)
    decoder = decoder_of(model)
    vocab = decoder.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(0)
    U, T, C = args.users, args.items, args.candidates
    sequence = torch.randint(10, vocab, (U, T), generator=gen)
    lengths = torch.full((U,), T)
    # pass p covers prefixes [p*chunk, (p+1)*chunk): the sequence plus chunk*C candidates
    passes = []
    for lo in range(0, T, args.chunk):
        hi = min(lo + args.chunk, T)
        prefix = torch.arange(lo, hi).repeat_interleave(C)[None].expand(U, -1).contiguous()
        cands = torch.randint(10, vocab, prefix.shape, generator=gen)
        passes.append((cands, prefix))
    n_tokens = sum(U * (T + c.shape[1]) for c, _ in passes)

    def packed() -> None:
        with torch.no_grad():
            for cands, prefix in passes:
                packed_forward(model, sequence, lengths, cands, prefix)

    row = sum(T + c.shape[1] for c, _ in passes)  # same tokens as the packed passes, as plain causal rows
    plain_ids = torch.randint(10, vocab, (U, row // len(passes)), generator=gen)

    def plain() -> None:
        with torch.no_grad():
            for _ in passes:
                decoder(input_ids=plain_ids, use_cache=False)

    nu = min(args.naive_users, U)

    def naive() -> None:
        with torch.no_grad():
            for cands, prefix in passes:
                separate_forward(model, sequence[:nu], lengths[:nu], cands[:nu], prefix[:nu])

    t_packed, t_plain = timed(packed), timed(plain)
    t0 = time.perf_counter()
    naive()
    t_naive_sample = time.perf_counter() - t0
    t_naive = t_naive_sample * U / nu
    plain_tokens = U * (row // len(passes)) * len(passes)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, LM {args.lm or 'SmolLM2-135M-Instruct'} ({args.dtype})")
    print(f"work: {U} users x {T} items x {C} candidates per prefix = {U * T} prefixes, {U * T * C} candidates")
    print(f"packed single pass : {t_packed:8.2f} s  {n_tokens / t_packed:8.0f} tokens/s ({len(passes)} passes of "
          f"{T} + {args.chunk * C} tokens per user)")
    print(f"plain causal fwd   : {t_plain:8.2f} s  {plain_tokens / t_plain:8.0f} tokens/s (same token count)")
    print(f"naive per prompt   : {t_naive:8.2f} s  (measured {t_naive_sample:.2f} s on {nu} users, x{U / nu:.0f})")
    print(f"packed vs naive    : {t_naive / t_packed:6.1f}x less wall time   (target >= 50x)")
    print(f"packed / plain tok/s: {(n_tokens / t_packed) / (plain_tokens / t_plain):6.2f}   (target >= 0.90)")


if __name__ == "__main__":
    main()
