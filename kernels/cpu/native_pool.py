"""One pool of native threads for parallel kernels and for OpenBLAS's GEMMs.

A parallel kernel call used to go through a Python ``ThreadPoolExecutor`` (20-40 us of
dispatch, and a sleeping thread to wake), and a GEMM through OpenBLAS's own threads,
which sleep ~0.1 ms after their last job. On this 2-core VM waking a sleeping thread
costs 100-150 us (a 256^3 GEMM: 0.19 ms right after another, 0.32 ms after a 2 ms
pause), and a compiled training step alternates GEMMs and kernels a hundred times.
Here both run on the same threads, which spin between tasks while work keeps coming
and sleep on a condition variable after ``GCOMPILE_SPIN_US`` (default 2000) idle
microseconds, as an OpenMP runtime's threads do; OpenBLAS hands its jobs to them
through its threads callback (``openblas_set_threads_callback_function``, OpenBLAS
0.3.27 and later), so its own threads stay asleep.

The pool is a few functions of LLVM IR compiled once per process (no Numba) into the
kernel engine (``kernels.native``) and started from Python threads that call into
them with the GIL released. A task is ``n`` chunks of one runner function
``runner(desc, c)``; the caller publishes it and takes chunks itself, and each worker
that is spinning (or woken) takes chunks too, by compare-and-swap on a counter tagged
with the task's generation. Only one task runs on the pool at a time.

A kernel's chunks are independent: its caller never waits for a thread that is
asleep or busy elsewhere, it runs the chunks nobody took itself, and a second caller
(another Python thread) runs its chunks on its own thread, so results never depend on
which threads ran. OpenBLAS's jobs are not independent: they wait for each other's
packed panels, so all must run at once. They go to the pool only when it is free and
has a live worker for every job but the caller's (each takes one job and holds it to
the end), else to threads started for that call (``pthread_create``); and one BLAS
call runs at a time (its jobs use OpenBLAS's per-position buffers).

Kernel chunks are called through ``kernel_chunk`` with their C argument rows (one row
per chunk, the kernel's own ``lo, hi`` last), for kernels of up to ``MAX_ARGS``
arguments; larger ones, non-POSIX systems and ``GCOMPILE_NATIVE_POOL=0`` keep the
Python pool (``available()`` says which), which sends spinning workers to sleep first
(``quiesce``): they would share its threads' cores.
"""
from __future__ import annotations

import ctypes
import functools
import os
import platform
import threading
import time
from collections.abc import Callable

import numpy as np

__all__ = ["MAX_ARGS", "available", "rows_task", "serial_task", "run_rows", "quiesce",
           "one_blas_thread", "task_list",
           "ensure_workers",
           "routed_blas", "describe", "stats"]

MAX_ARGS = 40  # 99% of the kernels in a user's cache; each more costs ~0.4 ms to build

# state words, each group on its own 64-byte line
_SLOT = {"SEQ": 0, "NEXT": 8, "DONE": 16, "RUNNER": 24, "DESC": 25, "NCHUNKS": 26,
         "PARKED": 32, "PARKNOW": 33, "LIVE": 34, "LOCK": 40, "BLASLOCK": 48, "SPIN_NS": 56,
         "CLOCK": 57, "ONELOCK": 59, "ONEDEPTH": 60, "ONESAVED": 61, "ONEGET": 62,
         "ONEPUT": 63}
_GEN_SHIFT = 24  # NEXT = generation << 24 | next chunk


def _pause() -> tuple[str, str]:
    m = platform.machine().lower()
    if m in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "declare void @llvm.x86.sse2.pause()", "call void @llvm.x86.sse2.pause()"
    if m in ("aarch64", "arm64"):
        return "declare void @llvm.aarch64.hint(i32)", "call void @llvm.aarch64.hint(i32 1)"
    return "", ""


def _ir() -> str:
    decl, pause = _pause()

    def at(name: str) -> str:
        return f"getelementptr inbounds ([64 x i64], ptr @gc_pool_state, i64 0, i64 {_SLOT[name]})"

    chunk_mask = (1 << _GEN_SHIFT) - 1
    gen_mask = (1 << (64 - _GEN_SHIFT)) - 1
    head = f"""
{decl}
@gc_pool_state = global [64 x i64] zeroinitializer, align 64
@gc_pool_mutex = global [128 x i8] zeroinitializer, align 64
@gc_pool_cond = global [128 x i8] zeroinitializer, align 64
declare i32 @pthread_mutex_lock(ptr)
declare i32 @pthread_mutex_unlock(ptr)
declare i32 @pthread_cond_wait(ptr, ptr)
declare i32 @pthread_cond_broadcast(ptr)
declare i32 @pthread_mutex_init(ptr, ptr)
declare i32 @pthread_cond_init(ptr, ptr)
declare i32 @clock_gettime(i32, ptr)
declare i32 @pthread_create(ptr, ptr, ptr, ptr)
declare i32 @pthread_join(i64, ptr)

define void @gc_pool_init() {{
  %a = call i32 @pthread_mutex_init(ptr @gc_pool_mutex, ptr null)
  %b = call i32 @pthread_cond_init(ptr @gc_pool_cond, ptr null)
  ret void
}}

define ptr @gc_pool_state_ptr() {{
  ret ptr @gc_pool_state
}}

define internal i64 @gc_pool_now() {{
  %ts = alloca [2 x i64], align 8
  %c = load i64, ptr {at("CLOCK")}
  %c32 = trunc i64 %c to i32
  %r = call i32 @clock_gettime(i32 %c32, ptr %ts)
  %s = load i64, ptr %ts
  %pn = getelementptr inbounds [2 x i64], ptr %ts, i64 0, i64 1
  %n = load i64, ptr %pn
  %sn = mul i64 %s, 1000000000
  %t = add i64 %sn, %n
  ret i64 %t
}}

; take and run chunks of task generation %gen until none is left
define internal void @gc_pool_take(i64 %gen) {{
entry:
  br label %loop
loop:
  %cur = load atomic i64, ptr {at("NEXT")} seq_cst, align 8
  %g = lshr i64 %cur, {_GEN_SHIFT}
  %same = icmp eq i64 %g, %gen
  br i1 %same, label %check, label %out
check:
  %c = and i64 %cur, {chunk_mask}
  %n = load atomic i64, ptr {at("NCHUNKS")} monotonic, align 8
  %more = icmp ult i64 %c, %n
  br i1 %more, label %claim, label %out
claim:
  %runner = load atomic i64, ptr {at("RUNNER")} monotonic, align 8
  %desc = load atomic i64, ptr {at("DESC")} monotonic, align 8
  %new = add i64 %cur, 1
  %res = cmpxchg ptr {at("NEXT")}, i64 %cur, i64 %new seq_cst seq_cst
  %ok = extractvalue {{ i64, i1 }} %res, 1
  br i1 %ok, label %run, label %loop
run:
  %fp = inttoptr i64 %runner to ptr
  %dp = inttoptr i64 %desc to ptr
  call void %fp(ptr %dp, i64 %c)
  %old = atomicrmw add ptr {at("DONE")}, i64 1 seq_cst
  br label %loop
out:
  ret void
}}

; run chunks 0..n-1 of runner(desc, c): on the pool when it is free, else here alone
; (kernel chunks are independent)
define void @gc_pool_run(ptr %runner, ptr %desc, i64 %n) {{
entry:
  %lk = cmpxchg ptr {at("LOCK")}, i64 0, i64 1 seq_cst seq_cst
  %got = extractvalue {{ i64, i1 }} %lk, 1
  br i1 %got, label %pool, label %serial
pool:
  call void @gc_pool_run_locked(ptr %runner, ptr %desc, i64 %n)
  ret void
serial:
  %i = phi i64 [0, %entry], [%i1, %serial_body]
  %sdone = icmp uge i64 %i, %n
  br i1 %sdone, label %ret, label %serial_body
serial_body:
  call void %runner(ptr %desc, i64 %i)
  %i1 = add i64 %i, 1
  br label %serial
ret:
  ret void
}}

; publish a task (the caller holds LOCK), take chunks, wait for all, release LOCK
define internal void @gc_pool_run_locked(ptr %runner, ptr %desc, i64 %n) {{
entry:
  br label %post
post:
  %rv = ptrtoint ptr %runner to i64
  %dv = ptrtoint ptr %desc to i64
  store atomic i64 %rv, ptr {at("RUNNER")} monotonic, align 8
  store atomic i64 %dv, ptr {at("DESC")} monotonic, align 8
  store atomic i64 %n, ptr {at("NCHUNKS")} monotonic, align 8
  store atomic i64 0, ptr {at("DONE")} seq_cst, align 8
  store atomic i64 0, ptr {at("PARKNOW")} seq_cst, align 8
  %s0 = load atomic i64, ptr {at("SEQ")} seq_cst, align 8
  %s1 = add i64 %s0, 1
  %gen = and i64 %s1, {gen_mask}
  %nx = shl i64 %gen, {_GEN_SHIFT}
  store atomic i64 %nx, ptr {at("NEXT")} seq_cst, align 8
  store atomic i64 %gen, ptr {at("SEQ")} seq_cst, align 8
  %pk = load atomic i64, ptr {at("PARKED")} seq_cst, align 8
  %anyp = icmp ne i64 %pk, 0
  br i1 %anyp, label %wake, label %work
wake:
  %w1 = call i32 @pthread_mutex_lock(ptr @gc_pool_mutex)
  %w2 = call i32 @pthread_cond_broadcast(ptr @gc_pool_cond)
  %w3 = call i32 @pthread_mutex_unlock(ptr @gc_pool_mutex)
  br label %work
work:
  call void @gc_pool_take(i64 %gen)
  br label %wait
wait:
  %d = load atomic i64, ptr {at("DONE")} seq_cst, align 8
  %alldone = icmp uge i64 %d, %n
  br i1 %alldone, label %unlock, label %spin
spin:
  {pause}
  br label %wait
unlock:
  store atomic i64 0, ptr {at("LOCK")} seq_cst, align 8
  ret void
}}

; a worker: take chunks of every new task; spin while tasks keep coming, sleep on the
; condition variable after SPIN_NS idle nanoseconds or when PARKNOW is set
define void @gc_pool_worker() {{
entry:
  %lv = atomicrmw add ptr {at("LIVE")}, i64 1 seq_cst
  %s0 = add i64 0, -1
  %t0 = call i64 @gc_pool_now()
  br label %loop
loop:
  %last = phi i64 [%s0, %entry], [%s, %got], [%last, %idle], [%last, %woke]
  %since = phi i64 [%t0, %entry], [%tg, %got], [%since, %idle], [%tu, %woke]
  %i = phi i64 [0, %entry], [0, %got], [%i1, %idle], [0, %woke]
  %s = load atomic i64, ptr {at("SEQ")} seq_cst, align 8
  %new = icmp ne i64 %s, %last
  br i1 %new, label %got, label %idle0
got:
  call void @gc_pool_take(i64 %s)
  %tg = call i64 @gc_pool_now()
  br label %loop
idle0:
  {pause}
  %i1 = add i64 %i, 1
  %pn = load atomic i64, ptr {at("PARKNOW")} monotonic, align 8
  %pnow = icmp ne i64 %pn, 0
  br i1 %pnow, label %park, label %tick
tick:
  %m = and i64 %i1, 63
  %chk = icmp eq i64 %m, 0
  br i1 %chk, label %check, label %idle
check:
  %tn = call i64 @gc_pool_now()
  %el = sub i64 %tn, %since
  %lim = load atomic i64, ptr {at("SPIN_NS")} monotonic, align 8
  %over = icmp sgt i64 %el, %lim
  br i1 %over, label %park, label %idle
idle:
  br label %loop
park:
  %l1 = call i32 @pthread_mutex_lock(ptr @gc_pool_mutex)
  %o1 = atomicrmw add ptr {at("PARKED")}, i64 1 seq_cst
  %s2 = load atomic i64, ptr {at("SEQ")} seq_cst, align 8
  %same = icmp eq i64 %s2, %last
  br i1 %same, label %dowait, label %unpark
dowait:
  %cw = call i32 @pthread_cond_wait(ptr @gc_pool_cond, ptr @gc_pool_mutex)
  br label %unpark
unpark:
  %o2 = atomicrmw sub ptr {at("PARKED")}, i64 1 seq_cst
  %u1 = call i32 @pthread_mutex_unlock(ptr @gc_pool_mutex)
  %tu = call i64 @gc_pool_now()
  br label %woke
woke:
  br label %loop
}}

; OpenBLAS on one thread while anyone needs it (blas_calls.one_thread): the first user
; in saves OpenBLAS's thread count and sets 1, the last one out restores it (ONEGET and
; ONEPUT: OpenBLAS's getter and setter, 0 until blas_calls.provide sets them)
define internal void @gc_pool_one_lock() {{
entry:
  br label %try
try:
  %r = cmpxchg ptr {at("ONELOCK")}, i64 0, i64 1 seq_cst seq_cst
  %ok = extractvalue {{ i64, i1 }} %r, 1
  br i1 %ok, label %got, label %spin
spin:
  {pause}
  br label %try
got:
  ret void
}}

define void @gc_pool_one_enter() {{
entry:
  call void @gc_pool_one_lock()
  %d = load atomic i64, ptr {at("ONEDEPTH")} seq_cst, align 8
  %first = icmp eq i64 %d, 0
  br i1 %first, label %set, label %count
set:
  %gv = load atomic i64, ptr {at("ONEGET")} seq_cst, align 8
  %pv = load atomic i64, ptr {at("ONEPUT")} seq_cst, align 8
  %have = icmp ne i64 %pv, 0
  br i1 %have, label %call, label %count
call:
  %gf = inttoptr i64 %gv to ptr
  %pf = inttoptr i64 %pv to ptr
  %saved = call i32 %gf()
  %s64 = sext i32 %saved to i64
  store atomic i64 %s64, ptr {at("ONESAVED")} seq_cst, align 8
  call void %pf(i32 1)
  br label %count
count:
  %d1 = add i64 %d, 1
  store atomic i64 %d1, ptr {at("ONEDEPTH")} seq_cst, align 8
  store atomic i64 0, ptr {at("ONELOCK")} seq_cst, align 8
  ret void
}}

define void @gc_pool_one_exit() {{
entry:
  call void @gc_pool_one_lock()
  %d = load atomic i64, ptr {at("ONEDEPTH")} seq_cst, align 8
  %inside = icmp sgt i64 %d, 0
  br i1 %inside, label %dec, label %out
dec:
  %d1 = sub i64 %d, 1
  store atomic i64 %d1, ptr {at("ONEDEPTH")} seq_cst, align 8
  %last = icmp eq i64 %d1, 0
  %pv = load atomic i64, ptr {at("ONEPUT")} seq_cst, align 8
  %have = icmp ne i64 %pv, 0
  %both = and i1 %last, %have
  br i1 %both, label %restore, label %out
restore:
  %pf = inttoptr i64 %pv to ptr
  %sv = load atomic i64, ptr {at("ONESAVED")} seq_cst, align 8
  %s32 = trunc i64 %sv to i32
  call void %pf(i32 %s32)
  br label %out
out:
  store atomic i64 0, ptr {at("ONELOCK")} seq_cst, align 8
  ret void
}}

; gc_pool_run with OpenBLAS on one thread meanwhile (a kernel whose chunks call GEMM)
define void @gc_pool_run_one(ptr %runner, ptr %desc, i64 %n) {{
  call void @gc_pool_one_enter()
  call void @gc_pool_run(ptr %runner, ptr %desc, i64 %n)
  call void @gc_pool_one_exit()
  ret void
}}

; OpenBLAS's jobs: desc = [dojob, jobdata, element size, dojob_data]
define void @gc_pool_blas_chunk(ptr %desc, i64 %c) {{
  %fp = load ptr, ptr %desc
  %p1 = getelementptr inbounds i64, ptr %desc, i64 1
  %jd = load ptr, ptr %p1
  %p2 = getelementptr inbounds i64, ptr %desc, i64 2
  %es = load i64, ptr %p2
  %p3 = getelementptr inbounds i64, ptr %desc, i64 3
  %dd = load i64, ptr %p3
  %off = mul i64 %c, %es
  %job = getelementptr inbounds i8, ptr %jd, i64 %off
  %c32 = trunc i64 %c to i32
  %d32 = trunc i64 %dd to i32
  call void %fp(i32 %c32, ptr %job, i32 %d32)
  ret void
}}

; a thread of its own for one OpenBLAS job: arg = [desc, job]
define internal ptr @gc_pool_blas_thread(ptr %arg) {{
  %d = load ptr, ptr %arg
  %pc = getelementptr inbounds i64, ptr %arg, i64 1
  %c = load i64, ptr %pc
  call void @gc_pool_blas_chunk(ptr %d, i64 %c)
  ret ptr null
}}

; openblas_threads_callback: job i is dojob(i, jobdata + i * elsize, dojob_data). The
; jobs wait for each other, so all must run at once: on the pool when it is free and
; has a live worker for every job but the caller's, else on threads started for them.
; One call at a time (BLASLOCK): the jobs use OpenBLAS's per-position buffers.
define void @gc_pool_blas_callback(i32 %sync, ptr %dojob, i32 %numjobs, i64 %elsize,
                                   ptr %jobdata, i32 %dojob_data) {{
entry:
  %desc = alloca [4 x i64], align 8
  %n = sext i32 %numjobs to i64
  br label %acquire
acquire:
  %r = cmpxchg ptr {at("BLASLOCK")}, i64 0, i64 1 seq_cst seq_cst
  %ok = extractvalue {{ i64, i1 }} %r, 1
  br i1 %ok, label %go, label %spin
spin:
  {pause}
  br label %acquire
go:
  %fp = ptrtoint ptr %dojob to i64
  store i64 %fp, ptr %desc
  %jd = ptrtoint ptr %jobdata to i64
  %q1 = getelementptr inbounds [4 x i64], ptr %desc, i64 0, i64 1
  store i64 %jd, ptr %q1
  %q2 = getelementptr inbounds [4 x i64], ptr %desc, i64 0, i64 2
  store i64 %elsize, ptr %q2
  %dd = sext i32 %dojob_data to i64
  %q3 = getelementptr inbounds [4 x i64], ptr %desc, i64 0, i64 3
  store i64 %dd, ptr %q3
  %live = load atomic i64, ptr {at("LIVE")} seq_cst, align 8
  %have = add i64 %live, 1
  %enough = icmp sge i64 %have, %n
  br i1 %enough, label %trypool, label %threads
trypool:
  %lk = cmpxchg ptr {at("LOCK")}, i64 0, i64 1 seq_cst seq_cst
  %got = extractvalue {{ i64, i1 }} %lk, 1
  br i1 %got, label %pool, label %threads
pool:
  call void @gc_pool_run_locked(ptr @gc_pool_blas_chunk, ptr %desc, i64 %n)
  br label %done
threads:
  %tids = alloca i64, i64 %n, align 8
  %args = alloca [2 x i64], i64 %n, align 8
  br label %spawn
spawn:
  %i = phi i64 [1, %threads], [%i1, %spawn_body]
  %sdone = icmp uge i64 %i, %n
  br i1 %sdone, label %mine, label %spawn_body
spawn_body:
  %ai = getelementptr inbounds [2 x i64], ptr %args, i64 %i
  %dv = ptrtoint ptr %desc to i64
  store i64 %dv, ptr %ai
  %aic = getelementptr inbounds i64, ptr %ai, i64 1
  store i64 %i, ptr %aic
  %ti = getelementptr inbounds i64, ptr %tids, i64 %i
  %cr = call i32 @pthread_create(ptr %ti, ptr null, ptr @gc_pool_blas_thread, ptr %ai)
  %i1 = add i64 %i, 1
  br label %spawn
mine:
  call void @gc_pool_blas_chunk(ptr %desc, i64 0)
  br label %join
join:
  %j = phi i64 [1, %mine], [%j1, %join_body]
  %jdone = icmp uge i64 %j, %n
  br i1 %jdone, label %done, label %join_body
join_body:
  %tj = getelementptr inbounds i64, ptr %tids, i64 %j
  %t = load i64, ptr %tj
  %jr = call i32 @pthread_join(i64 %t, ptr null)
  %j1 = add i64 %j, 1
  br label %join
done:
  store atomic i64 0, ptr {at("BLASLOCK")} seq_cst, align 8
  ret void
}}
"""
    # a kernel's chunk: desc = [entry, nargs, rows]; chunk c calls entry(*rows[c])
    lines = [head, "define void @gc_pool_kernel_chunk(ptr %desc, i64 %c) {", "entry:",
             "  %fp = load ptr, ptr %desc",
             "  %p1 = getelementptr inbounds i64, ptr %desc, i64 1",
             "  %nargs = load i64, ptr %p1",
             "  %p2 = getelementptr inbounds i64, ptr %desc, i64 2",
             "  %base = load ptr, ptr %p2",
             "  %off = mul i64 %c, %nargs",
             "  %argv = getelementptr inbounds i64, ptr %base, i64 %off"]
    cases = " ".join(f"i64 {k}, label %a{k}" for k in range(1, MAX_ARGS + 1))
    lines.append(f"  switch i64 %nargs, label %done [ {cases} ]")
    for k in range(1, MAX_ARGS + 1):
        lines.append(f"a{k}:")
        vals = []
        for j in range(k):
            lines.append(f"  %g{k}_{j} = getelementptr inbounds i64, ptr %argv, i64 {j}")
            lines.append(f"  %v{k}_{j} = load i64, ptr %g{k}_{j}")
            vals.append(f"i64 %v{k}_{j}")
        lines.append(f"  call void %fp({', '.join(vals)})")
        lines.append("  br label %done")
    lines += ["done:", "  ret void", "}",
              "define void @gc_pool_kernel_chunk_one(ptr %desc, i64 %c) {",
              "  call void @gc_pool_one_enter()",
              "  call void @gc_pool_kernel_chunk(ptr %desc, i64 %c)",
              "  call void @gc_pool_one_exit()",
              "  ret void", "}", _RUN_LIST]
    return "\n".join(lines)


# Several bound kernel calls in one: list = [count, then (kind, desc, chunks) per call];
# kind 0 a serial call (chunk 0 of desc), 1 the same inside the one-OpenBLAS-thread
# scope, 2 a task of ``chunks`` on the pool, 3 the same inside that scope.
_RUN_LIST = """
define void @gc_pool_run_list(ptr %list) {
entry:
  %n = load i64, ptr %list
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i1, %next]
  %done = icmp uge i64 %i, %n
  br i1 %done, label %out, label %body
body:
  %b3 = mul i64 %i, 3
  %ok = add i64 %b3, 1
  %pk = getelementptr inbounds i64, ptr %list, i64 %ok
  %kind = load i64, ptr %pk
  %oa = add i64 %b3, 2
  %pa = getelementptr inbounds i64, ptr %list, i64 %oa
  %a = load i64, ptr %pa
  %ob = add i64 %b3, 3
  %pb = getelementptr inbounds i64, ptr %list, i64 %ob
  %chunks = load i64, ptr %pb
  %desc = inttoptr i64 %a to ptr
  switch i64 %kind, label %next [ i64 0, label %k0 i64 1, label %k1 i64 2, label %k2
                                  i64 3, label %k3 ]
k0:
  call void @gc_pool_kernel_chunk(ptr %desc, i64 0)
  br label %next
k1:
  call void @gc_pool_kernel_chunk_one(ptr %desc, i64 0)
  br label %next
k2:
  call void @gc_pool_run(ptr @gc_pool_kernel_chunk, ptr %desc, i64 %chunks)
  br label %next
k3:
  call void @gc_pool_run_one(ptr @gc_pool_kernel_chunk, ptr %desc, i64 %chunks)
  br label %next
next:
  %i1 = add i64 %i, 1
  br label %loop
out:
  ret void
}
"""


_EXTERNALS = ["pthread_mutex_lock", "pthread_mutex_unlock", "pthread_cond_wait",
              "pthread_cond_broadcast", "pthread_mutex_init", "pthread_cond_init",
              "pthread_create", "pthread_join", "clock_gettime"]

_LOCK = threading.Lock()
_P: dict = {}  # the loaded pool: addresses, ctypes functions, state array, workers


def _disabled() -> bool:
    return os.environ.get("GCOMPILE_NATIVE_POOL", "1").strip() == "0" or os.name != "posix"


def _load() -> dict | None:
    """Compile the pool's IR into the kernel engine (once per process); None where it
    cannot run here."""
    if _P:
        return _P if _P.get("ok") else None
    with _LOCK:
        if _P:
            return _P if _P.get("ok") else None
        _P["ok"] = False
        if _disabled() or not _pause()[1]:
            return None
        from . import native
        try:
            if native.unresolved(_EXTERNALS):
                return None
            ll = native._ll()
            eng = native._engine()
            mod = ll.parse_assembly(_ir())
            mod.verify()
            # opt 0: the loops are a few loads and atomics, and the trampoline's
            # switch would take LLVM's optimiser ~0.1 s for nothing
            tm = ll.Target.from_default_triple().create_target_machine(opt=0)
            obj = tm.emit_object(mod)
            with native._LOCK:
                eng.add_object_file(ll.ObjectFileRef.from_data(obj))
                eng.finalize_object()
            addr = {name: eng.get_function_address(f"gc_pool_{name}") for name in
                    ("init", "state_ptr", "run", "worker", "blas_callback", "kernel_chunk",
                     "run_one", "kernel_chunk_one", "one_enter", "one_exit", "run_list")}
        except Exception:  # noqa: BLE001 - no pool: the Python pool keeps working
            return None
        if not all(addr.values()):
            return None
        ctypes.CFUNCTYPE(None)(addr["init"])()
        state = ctypes.CFUNCTYPE(ctypes.c_void_p)(addr["state_ptr"])()
        st = np.ctypeslib.as_array(ctypes.cast(state, ctypes.POINTER(ctypes.c_int64)),
                                   shape=(64,))
        _set_clock(st)
        _P.update(addr=addr, st=st, workers=[],
                  run=ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p,
                                       ctypes.c_int64)(addr["run"]),
                  run_one=ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p,
                                           ctypes.c_int64)(addr["run_one"]),
                  one_enter=ctypes.CFUNCTYPE(None)(addr["one_enter"]),
                  one_exit=ctypes.CFUNCTYPE(None)(addr["one_exit"]),
                  run_list=ctypes.CFUNCTYPE(None, ctypes.c_void_p)(addr["run_list"]),
                  worker=ctypes.CFUNCTYPE(None)(addr["worker"]), blas=[], ok=True,
                  chunk=ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(
                      addr["kernel_chunk"]),
                  chunk_one=ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(
                      addr["kernel_chunk_one"]))
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
        return _P


def _set_clock(st: np.ndarray) -> None:
    """The clock the workers read and how long they spin idle (``GCOMPILE_SPIN_US``)."""
    st[_SLOT["CLOCK"]] = time.CLOCK_MONOTONIC
    st[_SLOT["SPIN_NS"]] = int(float(os.environ.get("GCOMPILE_SPIN_US", 2000)) * 1000)


def available() -> bool:
    """Whether parallel kernel calls run on the native pool in this process."""
    return _load() is not None


def ensure_workers(threads: int) -> bool:
    """Have ``threads - 1`` workers (the caller is the other thread) and OpenBLAS's
    jobs routed to the pool; False where the pool is not available."""
    p = _load()
    if p is None:
        return False
    if len(p["workers"]) < threads - 1:
        with _LOCK:
            while len(p["workers"]) < threads - 1:
                t = threading.Thread(target=p["worker"], name="gcompile-native-worker",
                                     daemon=True)
                t.start()
                p["workers"].append(t)
    if not p["blas"]:
        with _LOCK:
            if not p["blas"]:
                p["blas"].extend(_route_openblas(p["addr"]["blas_callback"]) or [None])
    return True


def _openblas_setters() -> list[tuple[str, object]]:
    """(path, ``openblas_set_threads_callback_function``) of every loaded pthreads
    OpenBLAS that has one."""
    from .blas_spin import pthreads_openblas
    found = []
    for path in pthreads_openblas():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("openblas_set_threads_callback_function",
                     "scipy_openblas_set_threads_callback_function64_",
                     "scipy_openblas_set_threads_callback_function"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes = [ctypes.c_void_p]
                fn.restype = None
                found.append((path, fn))
                break
    return found


def _route_openblas(callback: int) -> list[str]:
    """Install the pool as the threads callback of every loaded pthreads OpenBLAS that
    has one; returns their paths."""
    done = []
    for path, setter in _openblas_setters():
        setter(callback)
        done.append(path)
    return done


def describe() -> str:
    """One line for ``gcompile env``: which pool parallel kernels use, and whether
    OpenBLAS's jobs run on it."""
    if _load() is None:
        why = "GCOMPILE_NATIVE_POOL=0" if _disabled() else "not available here"
        return f"python threads ({why})"
    spin = int(_P["st"][_SLOT["SPIN_NS"]]) // 1000
    blas = ("OpenBLAS jobs on it" if _openblas_setters() else
            "OpenBLAS without a threads callback keeps its own threads")
    return f"native (spins {spin} us between tasks; {blas})"


def routed_blas() -> list[str]:
    """The OpenBLAS libraries whose jobs run on the pool."""
    return [p for p in _P.get("blas", []) if p]


def rows_task(entry, rows: np.ndarray, one_blas: bool = False) -> Callable[[], None]:
    """A task calling the kernel ``entry`` (a ctypes function of int64 arguments) once
    per row of ``rows`` (C-contiguous int64, one row of C arguments per chunk, ``lo, hi``
    last): calling it runs the rows on the pool's threads. The rows may be rewritten
    between runs; ``rows`` must outlive the task. ``one_blas``: OpenBLAS on one thread
    while it runs (``one_blas_thread``), set and restored in native code."""
    desc = np.array([ctypes.cast(entry, ctypes.c_void_p).value, rows.shape[1],
                     rows.ctypes.data], np.int64)
    run = _P["run_one" if one_blas else "run"]
    chunk, addr, n = _P["addr"]["kernel_chunk"], desc.ctypes.data, rows.shape[0]

    def task() -> None:
        run(chunk, addr, n)
    task.desc = desc  # alive while the task is
    task.native = (3 if one_blas else 2, addr, n)   # (for ``task_list``)
    return task


def serial_task(entry, row: np.ndarray, one_blas: bool = False) -> Callable[[], None] | None:
    """A call of the kernel ``entry`` with the C arguments in ``row`` (C-contiguous
    int64, ``lo, hi`` last) on the calling thread, through the chunk trampoline: a
    ctypes call converts each argument (~0.12 us apiece: ~3 us for a kernel of 25),
    the trampoline takes two. The row may be rewritten between calls and must outlive
    the task. ``one_blas`` as for ``rows_task``. None where the pool (and so the
    trampoline) is not available here."""
    p = _load()
    if p is None or row.shape[-1] > MAX_ARGS:
        return None
    desc = np.array([ctypes.cast(entry, ctypes.c_void_p).value, row.shape[-1],
                     row.ctypes.data], np.int64)
    task = functools.partial(p["chunk_one" if one_blas else "chunk"], desc.ctypes.data, 0)
    task.desc = desc  # alive while the task is
    task.native = (1 if one_blas else 0, desc.ctypes.data, 1)   # (for ``task_list``)
    return task


def task_list(tasks: list) -> Callable[[], None] | None:
    """The tasks of ``rows_task`` and ``serial_task`` (their ``native`` descriptions) as
    one call that runs them in order from native code: one ctypes call (~0.3 us) where
    each would make its own. The tasks must outlive it. None where one of them is not
    such a task or the pool is not available."""
    p = _load()
    if p is None or any(getattr(t, "native", None) is None for t in tasks):
        return None
    rows = np.array([len(tasks)] + [v for t in tasks for v in t.native], np.int64)
    call = functools.partial(p["run_list"], rows.ctypes.data)
    call.keep = (rows, tasks)
    return call


class _OneBlasThread:
    """``with``: OpenBLAS on one thread, counted with the native tasks' own scopes."""

    __slots__ = ("enter", "leave")

    def __init__(self, p: dict) -> None:
        self.enter, self.leave = p["one_enter"], p["one_exit"]

    def __enter__(self) -> None:
        self.enter()

    def __exit__(self, *exc) -> None:
        self.leave()


def one_blas_thread(get: int, put: int) -> _OneBlasThread | None:
    """Make OpenBLAS's thread-count getter and setter (addresses of ``int get(void)`` and
    ``void put(int)``) the ones the pool's one-thread scope uses, and return a context
    manager for that scope: it and ``one_blas`` tasks share one count, held in native
    code (a task's scope then costs no Python). None where the pool is not available."""
    p = _load()
    if p is None:
        return None
    st = p["st"]
    st[_SLOT["ONEGET"]], st[_SLOT["ONEPUT"]] = get, put
    return _OneBlasThread(p)


def run_rows(entry, rows: np.ndarray) -> None:
    """Run ``rows_task(entry, rows)`` once."""
    rows_task(entry, rows)()


def quiesce() -> None:
    """Send spinning workers to sleep now (before work on other threads, such as the
    Python thread pool's, which would share their cores)."""
    p = _P
    if p.get("ok"):
        p["st"][_SLOT["PARKNOW"]] = 1


def stats() -> dict:
    """Tasks run, workers started and sleeping, BLAS libraries routed."""
    p = _P
    if not p.get("ok"):
        return {"available": False}
    st = p["st"]
    return {"available": True, "tasks": int(st[_SLOT["SEQ"]]), "workers": len(p["workers"]),
            "live": int(st[_SLOT["LIVE"]]), "sleeping": int(st[_SLOT["PARKED"]]),
            "blas": routed_blas()}


def _after_fork_in_child() -> None:
    """A forked child has none of the workers, and a lock may have been held by a
    thread that does not exist there: start from a clean state (workers are started
    again on the next parallel call)."""
    p = _P
    if not p.get("ok"):
        return
    st = p["st"]
    blas = st[_SLOT["ONEGET"]], st[_SLOT["ONEPUT"]]
    st[:] = 0
    st[_SLOT["ONEGET"]], st[_SLOT["ONEPUT"]] = blas
    _set_clock(st)
    ctypes.CFUNCTYPE(None)(p["addr"]["init"])()
    n = len(p["workers"])
    p["workers"] = []
    ensure_workers(n + 1)
