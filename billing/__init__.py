"""ElectroCloud billing: tariffs, determinants and invoices."""
