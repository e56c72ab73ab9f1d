export { BACKENDS, device } from "../../core-tensor/test/devices.js"
