"""ElectroCloud meter simulator: realistic virtual meters served over real Modbus TCP."""
