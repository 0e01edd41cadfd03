"""ElectroCloud edge agent: polls meters over Modbus, publishes readings over MQTT."""
