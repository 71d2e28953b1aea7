/* The input projection, y[m,n] += x[m,k] W^T over all T·B rows, on one core: OpenBLAS sgemm
 * (single-threaded, as the host calls it) against the plugins' packed kernel per ISA path in
 * panels of MC rows (W packed once; the pack's time is printed apart). Per-thread CPU time
 * (CLOCK_THREAD_CPUTIME_ID), minimum of 7, so other load on a shared machine matters less.
 * The shapes: A, E, C, B's first and second layers.
 *
 *   clang -O2 -ISources/CSeqCellKernels/include Sources/CSeqCellKernels/kernels.c \
 *         benchmarks/proj_micro.c -lopenblas -lm -o /tmp/proj_micro && /tmp/proj_micro 256
 */
#include "seqcell_kernels.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
void openblas_set_num_threads(int);
static double now(void){struct timespec t;clock_gettime(CLOCK_THREAD_CPUTIME_ID,&t);return t.tv_sec+1e-9*t.tv_nsec;}
static float *randoms(long n,unsigned s){float*p=malloc(4*n);srand(s);for(long i=0;i<n;i++)p[i]=(float)rand()/(float)RAND_MAX*2-1;return p;}
int main(int argc,char**argv){
  openblas_set_num_threads(1);
  int shapes[][3]={{3200,1024,256},{1280,4096,1024},{3200,1536,512},{3200,1024,128},{3200,1024,512}};
  int MC = argc>1?atoi(argv[1]):96;
  for(int s=0;s<5;s++){int m=shapes[s][0],n=shapes[s][1],k=shapes[s][2];
    float*w=randoms((long)n*k,1),*x=randoms((long)m*k,2),*y=randoms((long)m*n,3);
    float*p=malloc(4*sck_packed_floats(n,k));
    double bb=1e9,bp=1e9,bk[3]={1e9,1e9,1e9};
    for(int r=0;r<7;r++){
      double t0=now(); cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasTrans,m,n,k,1,x,k,w,k,1,y,n); double dt=now()-t0; if(dt<bb)bb=dt;
      t0=now(); sck_pack_wt(w,k,n,k,p); dt=now()-t0; if(dt<bp)bp=dt;
      for(int isa=1;isa<3;isa++){const sck_table*t=sck_kernels(isa); if(!t)continue;
        t0=now(); for(int r0=0;r0<m;r0+=MC){int mm=m-r0<MC?m-r0:MC; t->gemm_packed(x+(long)r0*k,mm,k,p,n,k,y+(long)r0*n,n,1);} dt=now()-t0; if(dt<bk[isa])bk[isa]=dt;}
    }
    double f=2.0*m*n*k/1e9;
    printf("m=%d n=%d k=%d: openblas %.1f GF/s (%.2f ms); pack %.2f ms; packed avx2 %.1f GF/s, avx512 %.1f GF/s (MC=%d)\n",m,n,k,f/bb,bb*1e3,bp*1e3,f/bk[1],f/bk[2],MC);
  }
}
