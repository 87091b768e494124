// The devices the planner knows: memory, bandwidth, whether memory is shared with the CPU (Jetson),
// and which low-precision formats the tensor cores run natively. Figures from the vendors'
// datasheets as collected in the team's perf-anchors.md §1 (Thor, T4000, AGX Orin 64, H100, H200,
// RTX 4090/5090) and NVIDIA's Jetson module datasheets for the smaller Orin parts.

export interface Device {
  id: string;
  name: string;
  /** Memory in GB (10^9 bytes), as the datasheet states it. */
  memoryGB: number;
  /** Memory bandwidth in GB/s. */
  bandwidthGBs: number;
  /** Jetson: one LPDDR pool shared by the OS, the CPU side and the GPU. */
  unified: boolean;
  /** CUDA compute capability, e.g. "sm_110". */
  sm: string;
  /** Native FP8 tensor-core GEMM (sm_89+). */
  fp8: boolean;
  /** Native FP4 (NVFP4) tensor-core GEMM (sm_100+). */
  fp4: boolean;
}

const d = (id: string, name: string, memoryGB: number, bandwidthGBs: number, unified: boolean, sm: string): Device => {
  const cc = Number(sm.replace('sm_', ''));
  return { id, name, memoryGB, bandwidthGBs, unified, sm, fp8: cc >= 89, fp4: cc >= 100 };
};

export const DEVICES: Record<string, Device> = {
  thor: d('thor', 'Jetson AGX Thor (T5000, 128 GB)', 128, 273, true, 'sm_110'),
  't5000': d('t5000', 'Jetson T5000 module (128 GB)', 128, 273, true, 'sm_110'),
  't4000': d('t4000', 'Jetson T4000 module (64 GB)', 64, 273, true, 'sm_110'),
  'orin-agx-64': d('orin-agx-64', 'Jetson AGX Orin 64 GB', 64, 204.8, true, 'sm_87'),
  'orin-agx-32': d('orin-agx-32', 'Jetson AGX Orin 32 GB', 32, 204.8, true, 'sm_87'),
  'orin-nx-16': d('orin-nx-16', 'Jetson Orin NX 16 GB', 16, 102.4, true, 'sm_87'),
  'orin-nx-8': d('orin-nx-8', 'Jetson Orin NX 8 GB', 8, 102.4, true, 'sm_87'),
  'orin-nano-8': d('orin-nano-8', 'Jetson Orin Nano 8 GB', 8, 68, true, 'sm_87'),
  'orin-nano-4': d('orin-nano-4', 'Jetson Orin Nano 4 GB', 4, 34, true, 'sm_87'),
  h100: d('h100', 'NVIDIA H100 SXM 80 GB', 80, 3350, false, 'sm_90'),
  h200: d('h200', 'NVIDIA H200 SXM 141 GB', 141, 4800, false, 'sm_90'),
  rtx4090: d('rtx4090', 'GeForce RTX 4090 24 GB', 24, 1008, false, 'sm_89'),
  rtx5090: d('rtx5090', 'GeForce RTX 5090 32 GB', 32, 1792, false, 'sm_120'),
};

export const DEVICE_ALIASES: Record<string, string> = {
  'agx-thor': 'thor',
  'jetson-thor': 'thor',
  'thor-128': 'thor',
  'thor-t5000': 't5000',
  'thor-t4000': 't4000',
  'agx-orin-64': 'orin-agx-64',
  'agx-orin-32': 'orin-agx-32',
  'agx-orin': 'orin-agx-64',
  orin: 'orin-agx-64',
  'orin-nx': 'orin-nx-16',
  'orin-nano': 'orin-nano-8',
  'orin-nano-super': 'orin-nano-8',
  'h100-80gb': 'h100',
  'h100-sxm': 'h100',
  'h200-141gb': 'h200',
  '4090': 'rtx4090',
  'rtx-4090': 'rtx4090',
  '5090': 'rtx5090',
  'rtx-5090': 'rtx5090',
};

export function findDevice(name: string): Device | undefined {
  const key = name.toLowerCase();
  return DEVICES[DEVICE_ALIASES[key] ?? key];
}

/** A device described only by its memory (--memory GB), discrete unless said otherwise. */
export function customDevice(memoryGB: number, unified = false): Device {
  return { id: 'custom', name: `${memoryGB} GB ${unified ? 'unified-memory device' : 'GPU'}`, memoryGB, bandwidthGBs: 0, unified, sm: 'unknown', fp8: true, fp4: true };
}
