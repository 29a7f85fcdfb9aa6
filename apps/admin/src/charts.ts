// ECharts, loaded only when a chart is first drawn: the core and the few
// pieces the console uses (line and bar charts, grid, tooltip, legend,
// the SVG renderer, which needs no canvas and scales crisply), imported
// dynamically so neither the console's entry nor a screen's own chunk
// carries them. Every screen with a chart shares the one loaded copy.
import type { EChartsCoreOption, EChartsType } from "echarts/core";

let loading: Promise<typeof import("echarts/core")> | null = null;

function load(): Promise<typeof import("echarts/core")> {
  loading ??= import("./echarts-parts").then((m) => m.echarts);
  return loading;
}

/** Draws `option` into `element` (replacing what was there); dispose the answer when done. */
export async function draw(element: HTMLElement, option: EChartsCoreOption, previous?: EChartsType | null): Promise<EChartsType> {
  const echarts = await load();
  const chart = previous && !previous.isDisposed() ? previous : echarts.init(element, undefined, { renderer: "svg" });
  chart.setOption(option, true);
  return chart;
}

export type { EChartsCoreOption, EChartsType };
