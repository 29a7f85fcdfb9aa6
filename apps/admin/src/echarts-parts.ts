// The parts of ECharts the console draws with, imported by name so the
// bundler keeps only them. Only charts.ts imports this module, and
// dynamically: it becomes its own chunk, loaded with the first chart.
import { BarChart, LineChart } from "echarts/charts";
import { GridComponent, LegendComponent, TooltipComponent } from "echarts/components";
import * as echarts from "echarts/core";
import { SVGRenderer } from "echarts/renderers";

echarts.use([LineChart, BarChart, GridComponent, TooltipComponent, LegendComponent, SVGRenderer]);

export { echarts };
