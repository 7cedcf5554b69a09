"""`hwpoller discover`: find the devices in address ranges and write a config for them.

ranges (what may be scanned: IPv4 ranges, bounded), probes (the presence probes: SNMP GET,
IPMI Get Channel Authentication Capabilities, Redfish service root), scan (every probe at
a bounded rate, within a deadline), detect (each found device polled once by its
protocol's real driver, as `hwpoller probe` does), output (target names, the YAML config,
the summary table, the progress line), command (the flags).
"""
