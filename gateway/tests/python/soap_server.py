"""A small SOAP-style upstream (Python http.server, xml.etree) for the XML/SOAP adaptation tests.

  soap_server.py   -> prints its port, serves until killed

POST / with a SOAP 1.1 (text/xml, SOAPAction) or 1.2 (application/soap+xml; action=...)
envelope. Operations (namespace urn:example:shop), chosen by the Body's first element:
  GetPrice(Item)            -> GetPriceResponse(Item, Price, Currency="EUR" attribute on Price)
                               unknown Item: Client/Sender fault "Unknown item X" with detail
  ListItems()               -> ListItemsResponse(Item* with @sku attributes)
  Crash()                   -> Server/Receiver fault "Backend exploded"
  Garbage()                 -> 200 with malformed XML
The response uses the request's SOAP version. Any other path or method: 404/405.
"""
import sys
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
SHOP = "urn:example:shop"
PRICES = {"apple": "1.20", "pear": "0.90", "fig": "3.10"}


def envelope(ns, body):
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<soap:Envelope xmlns:soap="{ns}" '
            f'xmlns:m="{SHOP}"><soap:Body>{body}</soap:Body></soap:Envelope>')


def fault(ns, client, reason, detail=""):
    if ns == SOAP11:
        code = "soap:Client" if client else "soap:Server"
        d = f"<detail>{detail}</detail>" if detail else ""
        return f"<soap:Fault><faultcode>{code}</faultcode><faultstring>{reason}</faultstring>{d}</soap:Fault>"
    code = "soap:Sender" if client else "soap:Receiver"
    d = f"<soap:Detail>{detail}</soap:Detail>" if detail else ""
    return (f"<soap:Fault><soap:Code><soap:Value>{code}</soap:Value></soap:Code>"
            f'<soap:Reason><soap:Text xml:lang="en">{reason}</soap:Text></soap:Reason>{d}</soap:Fault>')


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body, ctype):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply(405, "use POST", "text/plain")

    def do_POST(self):
        if self.path != "/":
            return self.reply(404, "not found", "text/plain")
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            root = ET.fromstring(raw)
        except ET.ParseError as e:
            return self.reply(400, f"bad XML: {e}", "text/plain")
        ns = SOAP11 if root.tag == f"{{{SOAP11}}}Envelope" else SOAP12 if root.tag == f"{{{SOAP12}}}Envelope" else None
        if ns is None:
            return self.reply(400, "not a SOAP envelope", "text/plain")
        ctype = "text/xml; charset=utf-8" if ns == SOAP11 else "application/soap+xml; charset=utf-8"
        body = root.find(f"{{{ns}}}Body")
        op = body[0] if body is not None and len(body) else None
        name = op.tag.split("}")[-1] if op is not None else ""
        action = self.headers.get("SOAPAction", "").strip('"') if ns == SOAP11 else self.headers.get("Content-Type", "")
        if name == "GetPrice":
            item = (op.findtext(f"{{{SHOP}}}Item") or "").strip()
            if item not in PRICES:
                return self.reply(500, envelope(ns, fault(ns, True, escape(f"Unknown item {item}"),
                                                          f"<m:Code>E404</m:Code><m:Item>{escape(item)}</m:Item>")), ctype)
            return self.reply(200, envelope(ns, f'<m:GetPriceResponse><m:Item>{escape(item)}</m:Item>'
                                                f'<m:Price currency="EUR">{PRICES[item]}</m:Price>'
                                                f'<m:Action>{escape(action)}</m:Action></m:GetPriceResponse>'), ctype)
        if name == "ListItems":
            items = "".join(f'<m:Item sku="{k}">{v}</m:Item>' for k, v in sorted(PRICES.items()))
            return self.reply(200, envelope(ns, f"<m:ListItemsResponse>{items}</m:ListItemsResponse>"), ctype)
        if name == "Crash":
            return self.reply(500, envelope(ns, fault(ns, False, "Backend exploded")), ctype)
        if name == "Garbage":
            return self.reply(200, "<soap:Envelope><unclosed>", ctype)
        return self.reply(500, envelope(ns, fault(ns, True, f"Unknown operation {name}")), ctype)


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
