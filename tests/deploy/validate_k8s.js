// Validates Kubernetes objects -- a JSON array on stdin -- against the Kubernetes
// OpenAPI schemas, with npm's kubernetes-models (installed by scripts/setup.sh).
// Prints one line per object; exits 1 when any object of a Kubernetes API group is
// invalid or of an unknown kind. Objects of other groups (CRDs such as the
// Prometheus operator's PodMonitor) have no schema there and are reported as such.
const objects = JSON.parse(require('fs').readFileSync(0, 'utf8'));
let bad = 0;
for (const o of objects) {
  const name = `${o.apiVersion} ${o.kind} ${(o.metadata || {}).name}`;
  const path = `kubernetes-models/${o.apiVersion}`;  // v1, apps/v1, policy/v1, ...
  let api;
  try {
    api = require(path);
  } catch (e) {
    console.log(`no-schema ${name} (not a Kubernetes API group)`);
    continue;
  }
  if (!api[o.kind]) {
    console.log(`UNKNOWN ${name}`);
    bad++;
    continue;
  }
  try {
    new api[o.kind](o).validate();
    console.log(`valid ${name}`);
  } catch (e) {
    console.log(`INVALID ${name}: ${e.message}`);
    bad++;
  }
}
process.exit(bad ? 1 : 0);
