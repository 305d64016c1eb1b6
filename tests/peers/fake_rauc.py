#!/usr/bin/env python3
"""A stand-in for the RAUC daemon's D-Bus service, for the rauc-hawkbit end-to-end test.

rauc-hawkbit drives RAUC over the D-Bus *system* bus (de.pengutronix.rauc, object /,
interface de.pengutronix.rauc.Installer). The test points DBUS_SYSTEM_BUS_ADDRESS at a private
dbus-daemon, and this service plays RAUC there: Install(s) records the bundle it was given
(path, size, SHA-256) in the file named by FAKE_RAUC_LOG, then moves Operation, Progress and
LastError as RAUC does and emits Completed(0).
"""
import hashlib
import os
import sys

from gi.repository import Gio, GLib

NAME = "de.pengutronix.rauc"
IFACE = "de.pengutronix.rauc.Installer"
INTROSPECTION = """
<node>
  <interface name="de.pengutronix.rauc.Installer">
    <method name="Install"><arg type="s" name="source" direction="in"/></method>
    <method name="InstallBundle">
      <arg type="s" name="source" direction="in"/>
      <arg type="a{sv}" name="args" direction="in"/>
    </method>
    <signal name="Completed"><arg type="i" name="result"/></signal>
    <property name="Operation" type="s" access="read"/>
    <property name="LastError" type="s" access="read"/>
    <property name="Progress" type="(isi)" access="read"/>
    <property name="Compatible" type="s" access="read"/>
    <property name="BootSlot" type="s" access="read"/>
  </interface>
</node>
"""
STEPS = [(0, "Installing", 1), (40, "Checking manifest contents", 2),
         (80, "Copying image to rootfs.1", 2), (100, "Installing done.", 1)]


class Rauc:
    def __init__(self):
        self.conn = None
        self.props = {
            "Operation": GLib.Variant("s", "idle"),
            "LastError": GLib.Variant("s", ""),
            "Progress": GLib.Variant("(isi)", (0, "", 0)),
            "Compatible": GLib.Variant("s", "dm-test"),
            "BootSlot": GLib.Variant("s", "A"),
        }

    def changed(self, **props):
        self.props.update(props)
        self.conn.emit_signal(None, "/", "org.freedesktop.DBus.Properties", "PropertiesChanged",
                              GLib.Variant("(sa{sv}as)", (IFACE, props, [])))

    def call(self, conn, sender, path, iface, method, params, invocation):
        if method not in ("Install", "InstallBundle"):
            invocation.return_dbus_error("org.freedesktop.DBus.Error.UnknownMethod", method)
            return
        source = params.unpack()[0]
        with open(source, "rb") as f:
            data = f.read()
        with open(os.environ["FAKE_RAUC_LOG"], "a") as log:
            log.write(f"{method} {source} {len(data)} {hashlib.sha256(data).hexdigest()}\n")
        invocation.return_value(None)
        self.changed(Operation=GLib.Variant("s", "installing"))
        GLib.timeout_add(100, self.step, iter(STEPS))

    def step(self, steps):
        try:
            pct, text, depth = next(steps)
        except StopIteration:
            self.changed(Operation=GLib.Variant("s", "idle"))
            self.conn.emit_signal(None, "/", IFACE, "Completed", GLib.Variant("(i)", (0,)))
            return False
        self.changed(Progress=GLib.Variant("(isi)", (pct, text, depth)))
        return True

    def prop(self, conn, sender, path, iface, name):
        return self.props[name]

    def acquired(self, conn, name):
        self.conn = conn
        node = Gio.DBusNodeInfo.new_for_xml(INTROSPECTION)
        conn.register_object("/", node.interfaces[0], self.call, self.prop, None)

    def ready(self, conn, name):
        print("fake-rauc: ready", flush=True)

    def lost(self, conn, name):
        print("fake-rauc: cannot own " + NAME, file=sys.stderr, flush=True)
        sys.exit(1)


def main():
    rauc = Rauc()
    Gio.bus_own_name(Gio.BusType.SYSTEM, NAME, Gio.BusNameOwnerFlags.NONE,
                     rauc.acquired, rauc.ready, rauc.lost)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
