// Reads a JSON array of simulations on stdin and prints one line per
// simulation: Allowed, ImplicitlyDenied, ExplicitlyDenied, or Error: <why>.
// Each simulation is iam-simulate's own input (request, identityPolicies,
// resourcePolicy); service control and resource control policies are none.
const { runSimulation } = require('@cloud-copilot/iam-simulate');

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const simulations = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  const lines = [];
  for (const simulation of simulations) {
    const result = await runSimulation(
      { serviceControlPolicies: [], resourceControlPolicies: [], ...simulation },
      { simulationMode: 'Strict' },
    );
    if (result.resultType === 'error') {
      lines.push('Error: ' + JSON.stringify(result.errors));
    } else {
      lines.push(result.overallResult);
    }
  }
  process.stdout.write(lines.join('\n') + '\n');
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error) + '\n');
  process.exit(1);
});
