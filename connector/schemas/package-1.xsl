<?xml version="1.0" encoding="UTF-8"?>
<!-- Renders a documentation package (urn:ccm-connector:package:1) as one self-contained HTML page. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" xmlns:p="urn:ccm-connector:package:1" exclude-result-prefixes="p">
  <xsl:output method="html" encoding="UTF-8" indent="yes"/>
  <xsl:template match="/p:package">
    <html>
      <head>
        <meta charset="utf-8"/>
        <title>CCM documentation package <xsl:value-of select="p:patientMonth/@patient"/> <xsl:text> </xsl:text><xsl:value-of select="p:patientMonth/@month"/></title>
        <style>
          body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:60em}
          h1{font-size:1.4em} h2{font-size:1.1em;border-bottom:1px solid #ccc;margin-top:1.6em}
          table{border-collapse:collapse;width:100%} td,th{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
          th{background:#f3f3f3} .exclude{color:#a33} .block{color:#a00;font-weight:bold} .warn{color:#a60} .muted{color:#777}
        </style>
      </head>
      <body>
        <xsl:apply-templates select="p:patientMonth"/>
        <h2>Charges</h2>
        <table><tr><th>Transaction</th><th>Code</th><th>Units</th><th>Date of service</th></tr>
          <xsl:for-each select="p:charges/p:line">
            <tr><td><xsl:value-of select="@transactionId"/></td><td><xsl:value-of select="@code"/></td><td><xsl:value-of select="@units"/></td><td><xsl:value-of select="@dateOfService"/></td></tr>
          </xsl:for-each>
        </table>
        <h2>Time summary</h2>
        <p>Countable <b><xsl:value-of select="p:timeSummary/@countable"/></b> minutes; excluded by the rules <xsl:value-of select="p:timeSummary/@excludedByRules"/>; excluded by reconciliation <xsl:value-of select="p:timeSummary/@excludedByReconciliation"/>.</p>
        <table><tr><th>Staff</th><th>Countable minutes</th></tr>
          <xsl:for-each select="p:timeSummary/p:staff"><tr><td><xsl:value-of select="@id"/></td><td><xsl:value-of select="@minutes"/></td></tr></xsl:for-each>
        </table>
        <h2>Activity log with practice sources</h2>
        <table><tr><th>Entry</th><th>Date</th><th>Performer</th><th>Minutes (counted)</th><th>Activity</th><th>Practice record</th><th>Findings</th></tr>
          <xsl:for-each select="p:activityLog/p:entry">
            <tr>
              <td><xsl:value-of select="@id"/></td><td><xsl:value-of select="@date"/></td><td><xsl:value-of select="@performer"/></td>
              <td><xsl:value-of select="@minutes"/> (<xsl:value-of select="@counted"/>)</td>
              <td><xsl:value-of select="@activity"/><br/><span class="muted"><xsl:value-of select="p:description"/></span></td>
              <td><xsl:for-each select="p:source"><xsl:value-of select="@touchpoint"/>: <xsl:value-of select="@staff"/>, <xsl:value-of select="@localStart"/>, <xsl:value-of select="@minutes"/> min<br/></xsl:for-each></td>
              <td class="exclude"><xsl:for-each select="p:finding"><xsl:value-of select="."/><br/></xsl:for-each></td>
            </tr>
          </xsl:for-each>
        </table>
        <h2>Care plan</h2>
        <xsl:choose>
          <xsl:when test="p:carePlan">
            <p>Dated <xsl:value-of select="p:carePlan/@date"/>, reviewed <xsl:value-of select="p:carePlan/@reviewed"/>, shared with the patient <xsl:value-of select="p:carePlan/@sharedWithPatient"/>.</p>
            <ul><xsl:for-each select="p:carePlan/p:element"><li><xsl:value-of select="."/></li></xsl:for-each></ul>
          </xsl:when>
          <xsl:otherwise><p class="block">No care plan on record.</p></xsl:otherwise>
        </xsl:choose>
        <h2>Consent and initiating visit</h2>
        <p>Consent: <xsl:value-of select="p:consent/@date"/> (practitioner <xsl:value-of select="p:consent/@practitioner"/>)</p>
        <p>Initiating visit: <xsl:value-of select="p:initiatingVisit/@code"/> on <xsl:value-of select="p:initiatingVisit/@date"/> by <xsl:value-of select="p:initiatingVisit/@practitioner"/>; CCM discussed: <xsl:value-of select="p:initiatingVisit/@ccmDiscussed"/></p>
        <h2>Findings</h2>
        <table><tr><th>Code</th><th>Severity</th><th>From</th><th>Entry</th><th>Message</th></tr>
          <xsl:for-each select="p:findings/p:finding">
            <tr class="{@severity}"><td><xsl:value-of select="@code"/></td><td><xsl:value-of select="@severity"/></td><td><xsl:value-of select="@source"/></td><td><xsl:value-of select="@entry"/></td><td><xsl:value-of select="."/></td></tr>
          </xsl:for-each>
        </table>
        <h2>Sign-off</h2>
        <p>Signed by NPI <xsl:value-of select="p:signoff/@npi"/> at <xsl:value-of select="p:signoff/@at"/> via <xsl:value-of select="p:signoff/@via"/>.</p>
        <p class="muted">Packet hash <xsl:value-of select="p:signoff/@packetHash"/></p>
      </body>
    </html>
  </xsl:template>
  <xsl:template match="p:patientMonth">
    <h1>CCM documentation package: patient <xsl:value-of select="@patient"/>, <xsl:value-of select="@month"/></h1>
    <p>Practice <xsl:value-of select="@practice"/>; program <xsl:value-of select="@program"/>; billing practitioner NPI <xsl:value-of select="@billingPractitioner"/>; rule set <xsl:value-of select="@rules"/>.</p>
  </xsl:template>
</xsl:stylesheet>
