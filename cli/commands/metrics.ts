import { defineCommand } from '../command.js';
import { printJson } from '../output.js';

export const metricsCommand = defineCommand({
  command: 'metrics',
  describe: "Print the agent's Prometheus metrics (text exposition format), as GET /v1/metrics serves them",
  builder: (y) => y,
  run: async (_argv, ctx) => {
    const client = await ctx.agent();
    const text = await client.metrics();
    // --json: the one JSON document is the exposition as a string.
    if (ctx.json) printJson(ctx.io.stdout, text);
    else ctx.io.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  },
});
