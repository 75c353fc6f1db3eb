/* avx2_only.so: run a process on an AVX2-only view of this CPU.
 *
 * Loaded with LD_PRELOAD (benchmarks/avx2_only.py builds and loads it). It asks Linux to trap the
 * CPUID instruction in this process (arch_prctl ARCH_SET_CPUID, needs the CPU's "cpuid_fault"
 * feature), answers each trapped CPUID itself with the real values minus AVX-512, AVX-VNNI and AMX,
 * and steps over the instruction. Every library that picks its kernels from CPUID (ONNX Runtime's
 * MLAS, MindSpore's oneDNN, numpy) then picks what it picks on an AVX2-only CPU. The setting is
 * per thread and inherited by threads started later, so a process's every thread sees the same.
 * glibc read CPUID before this library loads: GLIBC_TUNABLES hides AVX-512 from it.
 *
 * The kernels are the AVX2 ones; the core under them is still this machine's (its clock, caches,
 * and how fast it runs 256-bit instructions), so timings are an AVX2 code path on this core, not
 * another CPU.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

/* the SIGSEGV handler the program itself installs (Python's faulthandler, a runtime's crash
   report): a fault that is not a trapped CPUID goes to it */
static struct sigaction program_handler;

static sigaction_fn real_sigaction(void) {
    static sigaction_fn real;
    if (!real) real = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    return real;
}

static void bit_clear(uint32_t *reg, const int *bits, int n) {
    for (int i = 0; i < n; i++) *reg &= ~(1u << bits[i]);
}

/* the real CPUID leaf/subleaf with the AVX2-only machine's answers: r = eax, ebx, ecx, edx */
static void answer(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);  /* let this one CPUID through */
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    if (leaf == 7 && sub == 0) {
        /* ebx: AVX512F, DQ, IFMA, PF, ER, CD, BW, VL */
        static const int ebx[] = {16, 17, 21, 26, 27, 28, 30, 31};
        /* ecx: AVX512_VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ */
        static const int ecx[] = {1, 6, 11, 12, 14};
        /* edx: AVX512_4VNNIW, 4FMAPS, VP2INTERSECT, AMX_BF16, AVX512_FP16, AMX_TILE, AMX_INT8 */
        static const int edx[] = {2, 3, 8, 22, 23, 24, 25};
        bit_clear(&r[1], ebx, 8);
        bit_clear(&r[2], ecx, 5);
        bit_clear(&r[3], edx, 7);
    } else if (leaf == 7 && sub == 1) {
        static const int eax[] = {4, 5, 23};       /* AVX_VNNI, AVX512_BF16, AVX_IFMA */
        static const int edx[] = {4, 5, 10};       /* AVX_VNNI_INT8, AVX_NE_CONVERT, AVX_VNNI_INT16 */
        bit_clear(&r[0], eax, 3);
        bit_clear(&r[3], edx, 3);
    } else if (leaf == 0xD && sub == 0) {
        static const int eax[] = {5, 6, 7, 17, 18}; /* opmask, ZMM and AMX tile state */
        bit_clear(&r[0], eax, 5);
    }
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    greg_t *reg = ((ucontext_t *)context)->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)reg[REG_RIP];
    if (info->si_code == SI_KERNEL && ip[0] == 0x0F && ip[1] == 0xA2) {  /* a trapped CPUID */
        uint32_t r[4];
        answer((uint32_t)reg[REG_RAX], (uint32_t)reg[REG_RCX], r);
        reg[REG_RAX] = r[0];
        reg[REG_RBX] = r[1];
        reg[REG_RCX] = r[2];
        reg[REG_RDX] = r[3];
        reg[REG_RIP] += 2;
        return;
    }
    if ((program_handler.sa_flags & SA_SIGINFO) && program_handler.sa_sigaction) {
        program_handler.sa_sigaction(sig, info, context);
        return;
    }
    if (program_handler.sa_handler != SIG_DFL && program_handler.sa_handler != SIG_IGN) {
        program_handler.sa_handler(sig);
        return;
    }
    /* a real fault and no handler of the program's: the default action, when the instruction
       runs again on return */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    real_sigaction()(SIGSEGV, &dfl, NULL);
}

/* signal() and sigaction(): the program's own SIGSEGV handler is kept aside and called from ours: ours stays installed, or
   the next CPUID would kill the process. */
int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (sig != SIGSEGV) return real_sigaction()(sig, act, old);
    if (old) *old = program_handler;
    if (act) program_handler = *act;
    return 0;
}

sighandler_t signal(int sig, sighandler_t handler) {
    if (sig != SIGSEGV) {
        static sighandler_t (*real)(int, sighandler_t);
        if (!real) real = (sighandler_t (*)(int, sighandler_t))dlsym(RTLD_NEXT, "signal");
        return real(sig, handler);
    }
    sighandler_t old = (program_handler.sa_flags & SA_SIGINFO) ? SIG_DFL : program_handler.sa_handler;
    memset(&program_handler, 0, sizeof program_handler);
    program_handler.sa_handler = handler;
    return old;
}

__attribute__((constructor)) static void start(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    real_sigaction()(SIGSEGV, &sa, &program_handler);
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        static const char msg[] = "avx2_only.so: this CPU or kernel cannot trap CPUID "
                                  "(arch_prctl ARCH_SET_CPUID failed; the CPU needs the cpuid_fault feature)\n";
        if (write(2, msg, sizeof msg - 1) < 0) {}
        _exit(97);
    }
}
