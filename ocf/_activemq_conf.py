"""The ActiveMQ broker's configuration files: what the agent writes and what it accepts.

- :func:`generated_config`: an activemq.xml built with ElementTree from the
  agent's parameters (the default when the operator gives none);
- :func:`check_config`: refuses an operator's activemq.xml that keeps a
  store outside the data directory (it would not fail over with the
  partition) or lacks the STOMP connector the monitor talks to;
- :func:`log4j_properties`: Debian's broker runs log4j 1.2 and logs nothing
  without a properties file in that format.
"""

from __future__ import annotations

import os

from hapack.ocf import ConfigError
from hapack.ocf._datadir import inside

BEANS = "http://www.springframework.org/schema/beans"
AMQ = "http://activemq.apache.org/schema/core"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
_LOG4J = """log4j.rootLogger=INFO, logfile
log4j.logger.org.springframework=WARN
log4j.logger.org.apache.xbean=WARN
log4j.appender.logfile=org.apache.log4j.RollingFileAppender
log4j.appender.logfile.file={log}
log4j.appender.logfile.maxFileSize=10240KB
log4j.appender.logfile.maxBackupIndex=5
log4j.appender.logfile.layout=org.apache.log4j.PatternLayout
log4j.appender.logfile.layout.ConversionPattern=%d | %-5p | %m | %c | %t%n
"""


def log4j_properties(logfile: str) -> str:
    return _LOG4J.format(log=logfile)


def _uri(scheme, host, port):
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def generated_config(broker_name: str, data_dir: str, bind_address: str, openwire_port: int,
                     stomp_port: int) -> bytes:
    """The broker's activemq.xml (bytes): KahaDB in data_dir, OpenWire (unless port 0)
    and STOMP connectors on bind_address, memory limit at 70% of the heap. Built with
    the standard library's ElementTree, so starting a broker needs no lxml."""
    from xml.etree import ElementTree as ET
    for prefix, uri in (("", BEANS), ("amq", AMQ), ("xsi", XSI)):
        ET.register_namespace(prefix, uri)
    beans = ET.Element(f"{{{BEANS}}}beans", {f"{{{XSI}}}schemaLocation": (
        f"{BEANS} {BEANS}/spring-beans.xsd {AMQ} {AMQ}/activemq-core.xsd")})

    def sub(parent, tag, **attrs):
        return ET.SubElement(parent, f"{{{AMQ}}}{tag}", attrs)

    broker = sub(beans, "broker", brokerName=broker_name, useJmx="false", persistent="true",
                 dataDirectory=data_dir)
    sub(sub(broker, "persistenceAdapter"), "kahaDB", directory=os.path.join(data_dir, "kahadb"))
    usage = sub(sub(broker, "systemUsage"), "systemUsage")
    sub(sub(usage, "memoryUsage"), "memoryUsage", percentOfJvmHeap="70")
    connectors = sub(broker, "transportConnectors")
    if openwire_port:
        sub(connectors, "transportConnector", name="openwire",
            uri=_uri("tcp", bind_address, openwire_port))
    sub(connectors, "transportConnector", name="stomp",
        uri=_uri("stomp", bind_address, stomp_port))
    ET.indent(beans)
    return ET.tostring(beans, encoding="UTF-8", xml_declaration=True)


def _port(uri):
    from urllib.parse import urlsplit
    try:
        return urlsplit(uri).port
    except ValueError:
        return None


def check_config(path: str, data_dir: str, stomp_port: int) -> None:
    """Refuse an activemq.xml whose stores leave data_dir or that lacks our STOMP port."""
    from xml.etree import ElementTree as ET
    try:
        doc = ET.parse(path)
    except (OSError, ET.ParseError) as exc:
        raise ConfigError(f"config {path}: {exc}") from None
    uris = [e.get("uri", "") for e in doc.iterfind(".//{*}transportConnector")]
    if not any(u.startswith("stomp") and _port(u) == stomp_port for u in uris):
        raise ConfigError(f"config {path} has no stomp:// connector on port {stomp_port} "
                          "(the monitor speaks STOMP)")
    dirs = [e.get("dataDirectory") for e in doc.iterfind(".//{*}broker")]
    dirs += [e.get("directory") for e in doc.iter()]
    for folder in filter(None, dirs):
        if not (folder.startswith("${activemq.data}") or inside(folder, data_dir)):
            raise ConfigError(f"config {path} keeps a store in {folder}, outside data_dir "
                              f"{data_dir}: it would not fail over with the partition")
