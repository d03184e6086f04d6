// The demo's starting data. A real app would load it from its own API; here it
// is fixed, and everything that happened since comes from livehub's event log
// (fetched once at sign-in) and then live over Socket.IO.

export const SHIPMENT_STATUSES = [
  "booked",
  "in_transit",
  "at_customs",
  "arrived",
  "received",
  "inspected",
  "delayed",
  "rejected",
];

export const ORDER_STATUSES = [
  "pending",
  "confirmed",
  "in_production",
  "quality_check",
  "shipped",
  "completed",
  "cancelled",
];

export const MACHINE_STATUSES = ["running", "idle", "maintenance", "error", "offline"];

export const SHIPMENTS = [
  { id: "SH-1001", branchId: "north", poNumber: "PO-2024-001", supplier: "Acme Metals", route: "Rotterdam → North DC", eta: "2025-03-14", status: "in_transit" },
  { id: "SH-1002", branchId: "north", poNumber: "PO-2024-007", supplier: "Kite Plastics", route: "Gdańsk → North DC", eta: "2025-03-16", status: "booked" },
  { id: "SH-1003", branchId: "north", poNumber: "PO-2024-011", supplier: "Delta Foods", route: "Antwerp → North DC", eta: "2025-03-12", status: "at_customs" },
  { id: "SH-1004", branchId: "north", poNumber: "PO-2024-015", supplier: "Boreal Timber", route: "Oslo → North DC", eta: "2025-03-10", status: "received" },
  { id: "SH-2001", branchId: "south", poNumber: "PO-2024-021", supplier: "Sol Textiles", route: "Valencia → South DC", eta: "2025-03-15", status: "in_transit" },
  { id: "SH-2002", branchId: "south", poNumber: "PO-2024-024", supplier: "Pampa Leather", route: "Santos → South DC", eta: "2025-03-22", status: "booked" },
  { id: "SH-2003", branchId: "south", poNumber: "PO-2024-030", supplier: "Nile Cotton", route: "Alexandria → South DC", eta: "2025-03-11", status: "arrived" },
];

export const ORDERS = [
  { id: "ORD-5001", branchId: "north", customer: "Harbor Foods", item: "Steel brackets × 400", priority: "high", status: "in_production" },
  { id: "ORD-5002", branchId: "north", customer: "Lumen Lights", item: "Enclosures × 120", priority: "normal", status: "confirmed" },
  { id: "ORD-5003", branchId: "north", customer: "Fjord Marine", item: "Hull plates × 36", priority: "urgent", status: "quality_check" },
  { id: "ORD-5004", branchId: "north", customer: "Atlas Rail", item: "Rail clips × 2 000", priority: "normal", status: "pending" },
  { id: "ORD-6001", branchId: "south", customer: "Verde Farms", item: "Irrigation valves × 80", priority: "normal", status: "confirmed" },
  { id: "ORD-6002", branchId: "south", customer: "Costa Hotels", item: "Door frames × 60", priority: "high", status: "in_production" },
  { id: "ORD-6003", branchId: "south", customer: "Sierra Solar", item: "Mounting rails × 900", priority: "urgent", status: "pending" },
];

export const MACHINES = [
  { id: "M-01", branchId: "north", name: "Laser cutter", status: "running" },
  { id: "M-02", branchId: "north", name: "Press brake", status: "running" },
  { id: "M-03", branchId: "north", name: "CNC mill", status: "idle" },
  { id: "M-04", branchId: "north", name: "Robot welder", status: "maintenance" },
  { id: "M-11", branchId: "south", name: "Plasma cutter", status: "running" },
  { id: "M-12", branchId: "south", name: "Paint line", status: "idle" },
  { id: "M-13", branchId: "south", name: "Assembly cell", status: "running" },
];

export const SAMPLE_DOCUMENTS = [
  { fileName: "proof-of-delivery.pdf", documentType: "proof_of_delivery", fileSize: 2_048_576 },
  { fileName: "commercial-invoice.pdf", documentType: "invoice", fileSize: 412_331 },
  { fileName: "packing-list.pdf", documentType: "packing_list", fileSize: 188_004 },
  { fileName: "customs-declaration.pdf", documentType: "customs", fileSize: 903_112 },
];

/** "in_transit" → "In transit". */
export function label(status) {
  if (status == null || status === "") return "—";
  const s = String(status).replace(/[_-]+/g, " ");
  return s.charAt(0).toUpperCase() + s.slice(1);
}
