// Validates Argo Rollouts objects, given as a JSON array on stdin, against
// the Argo Rollouts CRD schemas that @kubernetes-models/argo-rollouts ships.
// Prints one line per object; exits 1 if any is invalid.
import { readFileSync } from "node:fs";
import { AnalysisTemplate, Rollout } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1";

const kinds = { AnalysisTemplate, Rollout };
const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = false;
for (const object of objects) {
  const Model = kinds[object.kind];
  if (!Model) {
    console.log(`${object.kind}: no schema known`);
    failed = true;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`${object.kind}/${object.metadata.name}: valid`);
  } catch (error) {
    console.log(`${object.kind}/${object.metadata.name}: ${error.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
