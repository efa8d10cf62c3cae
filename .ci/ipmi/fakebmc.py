#!/usr/bin/env python3
"""pyghmi's fakebmc for ferric's ipmi tests, with three changes.

* It binds to one loopback address (pyghmi's `fakebmc` binds to every
  interface) and takes its user and password from the command line
  (`fakebmc` has admin/password built in).
* It remembers the boot flags it is given ("Set System Boot Options"
  parameter 5: valid, persistent and EFI bits, and the device) and reports
  them back, so persistent and one-time settings can be read
  (`fakebmc` always reports "only next boot").
* With --power-delay, a power change shows in the chassis status only that
  many seconds later, like a real server (tests the polling).

Everything else (RMCP+ sessions, cipher suite 3, chassis control, status)
is pyghmi's own BMC code. Several ports: one process each (--port).
Prints "listening <address>:<port>" once bound.
"""

import argparse
import sys
import threading
import time

import pyghmi.ipmi.bmc as bmc
from pyghmi.cmd.fakebmc import FakeBmc


class FerricBmc(FakeBmc):
    def __init__(self, authdata, port, address, power_delay):
        bmc.Bmc.__init__(self, authdata, port=port, address=address)
        self.powerstate = 'off'
        self.bootdevice = 'default'
        self.boot_flags = [0x00, 0x00, 0x00, 0x00, 0x00]
        self.power_delay = power_delay
        self.lock = threading.Lock()
        self.pending = None  # (state, when)

    def _settle(self):
        if self.pending and time.monotonic() >= self.pending[1]:
            self.powerstate = self.pending[0]
            self.pending = None

    def _change(self, state):
        with self.lock:
            self._settle()
            if self.power_delay > 0:
                self.pending = (state, time.monotonic() + self.power_delay)
            else:
                self.powerstate = state

    def get_power_state(self):
        with self.lock:
            self._settle()
            return self.powerstate

    def power_on(self):
        self._change('on')

    def power_off(self):
        self._change('off')

    def power_shutdown(self):
        self._change('off')

    def power_reset(self):
        pass

    def pulse_diag(self):
        return 0

    def cold_reset(self):
        # Never exit on "mc reset cold" (pyghmi's sample does).
        return 0

    def set_system_boot_options(self, request, session):
        data = request['data']
        if data[0] == 5 and len(data) >= 3:
            self.boot_flags = (list(data[1:6]) + [0] * 5)[:5]
            session.send_ipmi_response()
        elif data[0] in (0, 3, 4):
            session.send_ipmi_response()
        else:
            session.send_ipmi_response(code=0x80)

    def get_system_boot_options(self, request, session):
        if request['data'][0] == 5:
            session.send_ipmi_response(data=[1, 5] + self.boot_flags)
        else:
            session.send_ipmi_response(code=0x80)


def main():
    parser = argparse.ArgumentParser(prog='fakebmc.py', description=__doc__)
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--address', default='127.0.0.1')
    parser.add_argument('--user', default='admin')
    parser.add_argument('--password', default='password')
    parser.add_argument('--power-delay', type=float, default=0.0)
    args = parser.parse_args()
    server = FerricBmc({args.user: args.password}, args.port, args.address,
                       args.power_delay)
    print('listening %s:%d' % (args.address, args.port), flush=True)
    server.listen()


if __name__ == '__main__':
    sys.exit(main())
