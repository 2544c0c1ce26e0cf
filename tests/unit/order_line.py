"""One valid order event (the first line of the Online Retail sample), shared by the event and decode tests."""

ORDER_LINE = {
    "InvoiceNo": "536365",
    "StockCode": "85123A",
    "Description": "WHITE HANGING HEART T-LIGHT HOLDER",
    "Quantity": 6,
    "InvoiceDate": "2010-12-01T08:26:00Z",
    "UnitPrice": 2.55,
    "CustomerID": "17850",
    "Country": "United Kingdom",
    "LineNo": 0,
}
