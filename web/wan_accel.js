// Gives every wan-accel node the same colours so users can spot the pack's nodes in a graph.
import { app } from "../../scripts/app.js";

const NODE_PREFIX = "WanAccel";
const NODE_COLOR = "#1f4e5f";
const NODE_BGCOLOR = "#163843";

app.registerExtension({
  name: "wan_accel.appearance",
  nodeCreated(node) {
    if (node.comfyClass?.startsWith(NODE_PREFIX)) {
      node.color = NODE_COLOR;
      node.bgcolor = NODE_BGCOLOR;
    }
  },
});
